"""The target protocol with an explicit n: ``variation(x[B], t, k, seeds[B][n]) -> [B, n, C, H, W]``,
the deprecated flat form and ``_variation`` hook (still working, with a DeprecationWarning naming
the new call), ``clip`` on/off, the query cache per variation, and the one t/k rule."""

from __future__ import annotations

import warnings

import pytest
import torch

from audit_core import ddim, seeding
from audit_core.plugin.attacks import Attack, AttackContext
from audit_core.data.cache import QueryCache
from audit_core.base.errors import ConfigError
from audit_core.plugin.targets import VARIATION, Target, TargetContext
from audit_core.testing import ToyParams, ToyTarget, make_batch


def toy(**kw) -> ToyTarget:
    return ToyTarget(ToyParams(**kw))


def images(b: int = 3) -> torch.Tensor:
    return make_batch(b, dtype=torch.float32).images


def test_grid_in_grid_out_equals_the_ddim_math_per_draw():
    tg, x = toy(), images(3)
    seeds = [[11, 12], [21, 22], [31, 32]]
    out = tg.variation(x, 100, 50, seeds)
    assert out.shape == (3, 2, 1, 8, 8) and out.dtype == torch.float32
    assert tg.stats.queries == 6 and tg.stats.nfe == 6 * 2
    assert tg.eps_calls == [(6, 100), (6, 50)]  # all B * n rows in one batch per DDIM step
    for i in range(3):
        for j in range(2):
            noise = seeding.randn(x.shape[1:], [seeds[i][j]])
            want = ddim.variation(tg.eps_fn(), x[i : i + 1].double(), noise.double(), 100, 50, tg.alphas_cumprod)
            torch.testing.assert_close(out[i, j], want[0].float(), rtol=1e-5, atol=1e-6)


def test_seed_grid_is_prefix_stable_and_matches_seed_matrix():
    batch = make_batch(3, run_seed=4, seed_key="a")
    grid = batch.seed_grid(5)
    assert [row[:2] for row in grid] == batch.seed_grid(2)
    assert [s for row in grid for s in row] == batch.seed_matrix(5)
    assert batch.seed_grid(2, first_draw=3) == [row[3:5] for row in grid]
    tg = toy()
    five = tg.variation(batch.images.float(), 100, 50, grid)
    two = tg.variation(batch.images.float(), 100, 50, batch.seed_grid(2))
    assert torch.equal(five[:, :2], two)  # the first m of n draws are an m-draw call's


def test_seeds_as_an_integer_tensor():
    tg, x = toy(), images(2)
    a = tg.variation(x, 100, 50, torch.tensor([[1, 2], [3, 4]]))
    assert torch.equal(a, tg.variation(x, 100, 50, [[1, 2], [3, 4]]))


def test_the_flat_form_still_works_with_a_deprecation_warning():
    tg, x = toy(), images(2)
    with pytest.warns(DeprecationWarning, match=r"seed_grid\(n\)"):
        flat = tg.variation(x.repeat_interleave(2, 0), 100, 50, [1, 2, 3, 4])
    assert flat.shape == (4, 1, 8, 8)
    assert torch.equal(flat.reshape(2, 2, 1, 8, 8), tg.variation(x, 100, 50, [[1, 2], [3, 4]]))


def test_a_target_overriding_the_old_flat_hook_keeps_working():
    with pytest.warns(DeprecationWarning, match=r"override Target._variations"):

        class OldStyle(Target):  # written against the earlier hook: one seed per row
            name = "old-style"
            capabilities = frozenset({VARIATION})

            def __init__(self):
                super().__init__(ToyParams())
                self.image_size, self.channels = 8, 1
                self.rows: list[int] = []

            def _variation(self, x, t, k, seeds, captions):
                self.rows.append(x.shape[0])
                return 2.0 * x + torch.tensor(seeds, dtype=x.dtype).view(-1, 1, 1, 1)

    tg, x = OldStyle(), images(2)
    out = tg.variation(x, 100, 50, [[1, 2, 3], [4, 5, 6]])
    assert tg.rows == [6] and out.shape == (2, 3, 1, 8, 8)
    torch.testing.assert_close(out[1, 2], 2.0 * x[1] + 6)
    torch.testing.assert_close(tg.variation(x, 100, 50, [[1], [2]], clip=True)[:, 0], (2.0 * x + torch.tensor([1.0, 2.0]).view(-1, 1, 1, 1)).clamp(-1, 1))


def test_clip_on_and_off():
    tg = toy(scale=-3.0)  # an eps that pushes the DDIM output out of [-1, 1]
    x = images(2)
    raw = tg.variation(x, 100, 50, [[1, 2], [3, 4]])
    assert (raw.abs() > 1).any()  # unclipped by default, like the official ReDiffuse code
    assert torch.equal(tg.variation(x, 100, 50, [[1, 2], [3, 4]], clip=True), raw.clamp(-1, 1))


def test_the_cache_serves_each_variation_and_keeps_clip_apart(tmp_path):
    x = images(3)
    grid = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    ref = toy(scale=-3.0).variation(x, 100, 50, grid)
    tg = ToyTarget(ToyParams(scale=-3.0), TargetContext(cache=QueryCache(tmp_path / "c")))
    first = tg.variation(x, 100, 50, [row[:2] for row in grid])  # a 2-draw run first
    assert tg.stats.queries == 6
    both = tg.variation(x, 100, 50, grid)  # then 4 draws: only draws 2 and 3 are computed
    assert tg.stats.queries == 6 + 6 and tg.stats.cache_hits == 6
    assert tg.eps_calls[-2:] == [(6, 100), (6, 50)]
    assert torch.equal(both, ref) and torch.equal(both[:, :2], first)
    clipped = tg.variation(x, 100, 50, grid, clip=True)  # other keys: not served unclipped values
    assert tg.stats.queries == 12 + 12 and torch.equal(clipped, ref.clamp(-1, 1))
    key = tg.cache_key(x[0], 100, 50, 1, None)
    assert key != tg.cache_key(x[0], 100, 50, 1, None, clip=False)


def test_one_tk_rule_everywhere():
    assert ddim.tk_problem(100, 50, 1000) is None
    assert ddim.tk_problem(1000, 10, 1000) == "t=1000 must satisfy 0 < t < T=1000"
    assert ddim.tk_problem(100, 30, 1000) == "k=30 must be positive and divide t=100"
    assert ddim.tk_problem(100, 0) == "k=0 must be positive and divide t=100"
    assert ddim.tk_problem(True, 1) == "t=True must be an integer"
    assert ddim.tk_problem(100, "50") == "k='50' must be an integer"
    assert ddim.tk_problem(100, 5, 1000, "t_sec", "steps") is None
    tg = toy()
    with pytest.raises(ValueError, match="k=30 must be positive and divide t=100"):
        tg.variation(images(2), 100, 30, [[1], [2]])
    assert tg.eps_calls == [] and tg.stats.queries == 0  # refused before any query
    with pytest.raises(ValueError, match="must be positive and divide"):
        ddim.denoise(tg.eps_fn(), images(1), 100, 30, tg.alphas_cumprod)
    attack = Attack(None, tg, AttackContext(name="a", seed_key="a"))
    with pytest.raises(ConfigError, match="attack 'a': t_sec=1000 must satisfy 0 < t_sec < T=1000"):
        attack.check_tk(1000, 10, "t_sec")
    with pytest.raises(ConfigError, match="attack 'a': k=30 must be positive and divide t=100"):
        attack.check_divides(100, 30)


@pytest.mark.parametrize(
    "seeds, match",
    [([[1], [2], [3]], "3 rows for 2 images"), ([[1, 2], [3]], "same number n >= 1"), ([[], []], "same number n >= 1"),
     (torch.zeros(2, 1), "integer tensor")],
)
def test_bad_seed_grids_are_refused(seeds, match):
    with pytest.raises(ValueError, match=match):
        toy().variation(images(2), 100, 50, seeds)


def test_no_regrouping_scans_remain():
    """n travels in the call: nothing recovers it by comparing rows."""
    import inspect

    from audit_core.plugin import targets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from audit_http import target as http_target
    for module in (targets, http_target):
        assert "torch.equal" not in inspect.getsource(module)
