"""Properties of the DDIM maths, the query-cache keys and copyright-mode inference, each against
a brute-force or closed-form reference (issue 25: `make mutate` runs these per mutant, so they
stay fast: no model, no run).

- DDIM: forward noising and x0 prediction invert each other; a step with the true noise lands
  exactly on the forward-noised image at the target index; denoise/invert walk t, t-k, ..., k /
  0, k, ..., t-k with one eps call each; variation = denoise(q_sample);
- cache keys: the sha256 of (identity, image bytes, t, k, seed, caption[, unclipped]) as earlier
  versions wrote them (a change would orphan every user's cache), each part changing the key;
- inference: p-values, the calibrated threshold, the Mann-Whitney effect size, combination and
  the results block against counting by hand.
"""

from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from audit_core import ddim
from audit_core.copyright import inference
from audit_core.copyright.reference import _cache_key as reference_cache_key
from audit_core.testing import ToyParams, ToyTarget

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ================================================================================ DDIM
ABAR = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


def _x(seed: int, shape=(2, 1, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_abar_at_is_one_before_the_first_step_and_the_schedule_after():
    assert ddim.abar_at(ABAR, -1) == 1.0 and ddim.abar_at(ABAR, -5) == 1.0
    for t in (0, 1, 500, 999):
        got = ddim.abar_at(ABAR, t)
        assert type(got) is float and got == ABAR[t].item()
    assert ddim.abar_at(ABAR, 0) < 1.0  # index 0 is already one noising step


@pytest.mark.parametrize("abar", [0.999, 0.5, 0.01])
def test_q_sample_and_predict_x0_by_hand_and_inverse(abar):
    x0, e = _x(1), _x(2)
    xt = ddim.q_sample(x0, e, abar)
    torch.testing.assert_close(xt, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * e, rtol=0, atol=1e-15)
    torch.testing.assert_close(ddim.predict_x0(xt, e, abar), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ddim.predict_x0(xt, e, abar), (xt - math.sqrt(1 - abar) * e) / math.sqrt(abar), rtol=0, atol=1e-15)


@pytest.mark.parametrize("t,s", [(500, 400), (400, 500), (10, -1), (0, 999), (999, 0)])
def test_a_step_with_the_true_noise_lands_on_the_forward_noised_image(t, s):
    """eta = 0 DDIM keeps the predicted x0 and the noise: stepping x_t (noise e) to s with e gives
    exactly q_sample(x0, e, abar_s), in either direction; to s = -1 it gives x0."""
    x0, e = _x(3), _x(4)
    a_t, a_s = ddim.abar_at(ABAR, t), ddim.abar_at(ABAR, s)
    xs = ddim.ddim_step(ddim.q_sample(x0, e, a_t), e, a_t, a_s)
    torch.testing.assert_close(xs, ddim.q_sample(x0, e, a_s), rtol=0, atol=1e-12)
    calls = []

    def eps(x, step):
        calls.append(step)
        return e

    torch.testing.assert_close(ddim.step(eps, ddim.q_sample(x0, e, a_t), t, s, ABAR), xs, rtol=0, atol=0)
    assert calls == [t]


def _affine_eps(calls: list):
    def eps(x, t):
        calls.append((x.clone(), t))
        return 0.3 * x + 1e-3 * t  # depends on x and t, so a wrong index or input shows
    return eps


def _by_hand(x, steps):
    """DDIM by the formulas, step by step over (t, s) pairs, in float64."""
    for t, s in steps:
        a_t, a_s = (ABAR[t].item() if t >= 0 else 1.0), (ABAR[s].item() if s >= 0 else 1.0)
        e = 0.3 * x + 1e-3 * t
        x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        x = math.sqrt(a_s) * x0 + math.sqrt(1 - a_s) * e
    return x


@pytest.mark.parametrize("t,k", [(100, 50), (100, 100), (60, 20), (0, 5), (7, 1)])
def test_denoise_and_invert_walk_the_grid_once_per_step(t, k):
    x = _x(5)
    calls: list = []
    down = ddim.denoise(_affine_eps(calls), x, t, k, ABAR)
    assert [c[1] for c in calls] == list(range(t, 0, -k))
    torch.testing.assert_close(down, _by_hand(x, [(c, c - k) for c in range(t, 0, -k)]), rtol=0, atol=1e-12)
    calls.clear()
    up = ddim.invert(_affine_eps(calls), x, t, k, ABAR)
    assert [c[1] for c in calls] == list(range(0, t, k))
    torch.testing.assert_close(up, _by_hand(x, [(c, c + k) for c in range(0, t, k)]), rtol=0, atol=1e-12)
    if calls:
        assert torch.equal(calls[0][0], x)  # the first inversion step sees the clean image


def test_inversion_then_denoising_with_the_true_noise_returns_the_image():
    """The clean image is the state at index 0 (abar[0] < 1): with a constant noise prediction e,
    inverting to t gives q_sample of its predicted x0 at t, and denoising that returns it exactly."""
    x0, e = _x(6), _x(7)
    const = lambda x, t: e  # noqa: E731
    up = ddim.invert(const, x0, 200, 50, ABAR)
    x0_hat = ddim.predict_x0(x0, e, ABAR[0].item())
    torch.testing.assert_close(up, ddim.q_sample(x0_hat, e, ABAR[200].item()), rtol=0, atol=1e-12)
    torch.testing.assert_close(ddim.denoise(const, up, 200, 50, ABAR), x0, rtol=0, atol=1e-12)


def test_variation_is_denoise_of_the_noised_image():
    x0, noise = _x(8), _x(9)
    calls: list = []
    got = ddim.variation(_affine_eps(calls), x0, noise, 100, 25, ABAR)
    xt = math.sqrt(ABAR[100].item()) * x0 + math.sqrt(1 - ABAR[100].item()) * noise
    torch.testing.assert_close(got, _by_hand(xt, [(c, c - 25) for c in range(100, 0, -25)]), rtol=0, atol=1e-12)
    assert torch.equal(calls[0][0], ddim.q_sample(x0, noise, ABAR[100].item()))


@pytest.mark.parametrize("t,k,T,problem", [
    (100, None, None, None),
    (0, None, None, None),
    (0, 5, None, None),
    (-1, None, None, "t=-1 must not be negative"),
    (-10, 5, None, "t=-10 must not be negative"),
    (1.5, None, None, "t=1.5 must be an integer"),
    (np.int64(100), np.int64(20), 1000, None),
    (1, 1, 2, None),
    (0, None, 10, "t=0 must satisfy 0 < t < T=10"),
    (10, None, 10, "t=10 must satisfy 0 < t < T=10"),
    (9, None, 10, None),
    (100, False, None, "k=False must be an integer"),
    (100, 2.0, None, "k=2.0 must be an integer"),
    (100, -50, None, "k=-50 must be positive and divide t=100"),
    (100, 0, None, "k=0 must be positive and divide t=100"),  # refused, not a division by zero
    (100, 1, None, None),
    (100, 100, None, None),
    (100, 200, None, "k=200 must be positive and divide t=100"),
])
def test_tk_rule(t, k, T, problem):
    assert ddim.tk_problem(t, k, T) == problem
    if problem is None:
        ddim.check_tk(t, k, T)
    else:
        with pytest.raises(ValueError) as err:
            ddim.check_tk(t, k, T)
        assert str(err.value) == problem


def test_tk_labels_name_the_params_in_every_message():
    assert ddim.tk_problem(0, 5, 10, "t_sec", "steps") == "t_sec=0 must satisfy 0 < t_sec < T=10"
    assert ddim.tk_problem(-1, None, None, "t_sec") == "t_sec=-1 must not be negative"
    assert ddim.tk_problem("a", None, None, "t_sec") == "t_sec='a' must be an integer"
    assert ddim.tk_problem(10, "x", None, "t_sec", "steps") == "steps='x' must be an integer"
    assert ddim.tk_problem(10, 3, None, "t_sec", "steps") == "steps=3 must be positive and divide t_sec=10"
    with pytest.raises(ValueError, match=r"^steps=3 must be positive and divide t_sec=10$"):
        ddim.check_tk(10, 3, None, "t_sec", "steps")
    with pytest.raises(ValueError, match=r"^k=3 must be positive and divide t=10$"):
        ddim.check_interval(10, 3)
    with pytest.raises(ValueError, match=r"^t=-2 must not be negative$"):
        ddim.check_interval(-2, 1)
    ddim.check_interval(0, 1)


def test_denoise_invert_and_variation_refuse_a_bad_interval_before_any_step():
    calls: list = []
    for fn, args in ((ddim.denoise, (_x(1), 100, 30)), (ddim.invert, (_x(1), 100, 30)), (ddim.variation, (_x(1), _x(2), 100, 30))):
        with pytest.raises(ValueError, match=r"^k=30 must be positive and divide t=100$"):
            fn(_affine_eps(calls), *args, ABAR)
    with pytest.raises(ValueError, match=r"^t=-3 must not be negative$"):
        ddim.denoise(_affine_eps(calls), _x(1), -3, 1, ABAR)
    assert calls == []


# ================================================================================ cache keys
def _key_by_hand(identity: str, image: torch.Tensor, t, k, seed, caption, unclipped: bool) -> str:
    h = hashlib.sha256(identity.encode() + image.to(torch.float32).contiguous().numpy().tobytes())
    h.update(f"|{t}|{k}|{seed}|{caption or ''}{'|unclipped' if unclipped else ''}".encode())
    return h.hexdigest()


@pytest.fixture
def target() -> ToyTarget:
    return ToyTarget(ToyParams())


def test_cache_key_formula_is_pinned(target):
    img = _x(10, (1, 8, 8))
    ident = target.identity()
    assert ident == 'toy:' + ToyParams().model_dump_json()
    for caption in (None, "", "a cat"):
        for clip in (True, False):
            got = target.cache_key(img, 100, 50, 7, caption, clip=clip)
            assert got == _key_by_hand(ident, img, 100, 50, 7, caption, unclipped=not clip)
            assert got == target.cache_key(img, 100, 50, 7, caption, ident, clip)
    assert target.cache_key(img, 100, 50, 7, None, "other") == _key_by_hand("other", img, 100, 50, 7, None, False)
    seeds = [3, 1, 4]
    assert target._cache_keys(img, 10, 5, seeds, "c", None, True) == [
        _key_by_hand(ident, img, 10, 5, s, "c", False) for s in seeds
    ]


def test_bounded_targets_share_clipped_and_unclipped_keys(target, monkeypatch):
    img = _x(11, (1, 8, 8))
    monkeypatch.setattr(type(target), "bounded_variations", True)
    assert target.cache_key(img, 100, 50, 7, None, clip=False) == target.cache_key(img, 100, 50, 7, None)


def test_every_part_changes_the_cache_key(target):
    img = _x(12, (1, 8, 8))
    base = dict(image=img, t=100, k=50, seed=7, caption="a")
    changed = dict(image=img + 1e-7, t=200, k=25, seed=8, caption="b")
    keys = {target.cache_key(**base)}
    for part, value in changed.items():
        keys.add(target.cache_key(**{**base, part: value}))
    keys.add(target.cache_key(**base, identity="x"))
    keys.add(target.cache_key(**base, clip=False))
    keys.add(ToyTarget(ToyParams(scale=0.4)).cache_key(**base))
    assert len(keys) == 9


def test_reference_cache_key_is_pinned():
    assert reference_cache_key("id", "a cat", 3) == hashlib.sha256(b"txt2img|id|3|a cat").hexdigest()


# ================================================================================ inference
def p_by_hand(s: float, ref) -> float:
    return (1 + sum(r >= s for r in ref)) / (1 + len(ref))


values = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=12)


@FAST
@given(values, values)
def test_empirical_p_values_count_the_reference_at_or_above(sus, ref):
    np.testing.assert_allclose(inference.empirical_p_values(sus, ref), [p_by_hand(s, ref) for s in sus], rtol=0, atol=1e-15)


@FAST
@given(values, st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.5]))
def test_calibrated_threshold_flags_exactly_p_at_most_alpha(ref, alpha):
    cal = inference.calibrated_threshold(ref, alpha)
    n = len(ref)
    small = n + 1 < 1 / alpha - 1e-9
    assert ("note" in cal) == small
    assert cal["per_image_fpr"] == (1 / (n + 1) if small else alpha)
    assert cal["threshold"] in ref
    assert cal["reference_fpr"] == sum(r > cal["threshold"] for r in ref) / n
    grid = sorted(set(ref)) + [max(ref) + 1, min(ref) - 1] + [r + 0.5 for r in ref]
    level = max(alpha, 1 / (n + 1))
    for s in grid:
        assert (s > cal["threshold"]) == (p_by_hand(s, ref) <= level + 1e-12), s
    assert list(cal)[0] == "threshold"


def test_calibrated_threshold_note_and_empty_reference():
    cal = inference.calibrated_threshold(np.arange(10.0), 0.05)
    assert cal == {
        "threshold": 9.0,
        "note": "the reference (10 images) is too small for alpha = 0.05: the smallest possible per-image p-value "
        "is 1/11 = 0.0909. Flags mark suspects above every reference score, which guarantees a false-positive rate "
        "of 0.0909, not 0.05; use at least 19 reference images for alpha = 0.05",
        "per_image_fpr": 1 / 11,
        "reference_fpr": 0.0,
    }
    assert inference.calibrated_threshold(np.arange(19.0), 0.05) == {
        "threshold": 18.0, "per_image_fpr": 0.05, "reference_fpr": 0.0}
    assert inference.calibrated_threshold(np.arange(39.0), 0.05)["threshold"] == 37.0  # 2 of 40 at or above
    with pytest.raises(ValueError, match="^the reference is empty$"):
        inference.calibrated_threshold([], 0.05)


def _u_by_hand(x, y) -> float:
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y)


@pytest.mark.parametrize("x,y,method", [
    ([5.0, 6.0, 7.0], [1.0, 2.0, 3.0, 4.0], "exact"),  # no ties, <= 8: exact
    ([2.0, 2.0, 3.0], [1.0, 2.0, 1.0, 0.0], "permutation"),  # ties, < 10
    (list(np.arange(8.0)), list(np.arange(10.0) + 0.5), "exact"),  # no ties, 8 suspects: still exact
    (list(np.arange(9.0)), list(np.arange(9.0) + 0.5), "exact"),  # no ties, 9 each: asymptotic (below)
    (list(np.arange(12.0)), list(np.arange(12.0) + 0.5), "asymptotic"),
    (list(np.arange(10.0)), list(np.arange(10.0)), "asymptotic"),  # ties but 10 each
])
def test_set_test_is_scipys_mann_whitney_with_the_stated_method(x, y, method):
    out = inference.set_test(x, y, seed=3)
    n_min = min(len(x), len(y))
    want_method = method if not (method == "exact" and n_min > 8) else "asymptotic"
    arg = stats.PermutationMethod(n_resamples=9999, rng=np.random.default_rng(3)) if want_method == "permutation" else want_method
    ref = stats.mannwhitneyu(x, y, alternative="greater", method=arg)
    assert out["u_statistic"] == _u_by_hand(x, y) == ref.statistic
    assert out["p_value"] == min(1.0, ref.pvalue)
    assert out["effect_auc"] == _u_by_hand(x, y) / (len(x) * len(y))
    assert out["min_p_value"] == 1 / math.comb(len(x) + len(y), len(x))
    how = {
        "exact": "exact null distribution",
        "asymptotic": "normal approximation with tie and continuity correction",
        "permutation": "permutation distribution (9999 seeded resamples, or exact when fewer), because of ties in a small sample",
    }[want_method]
    assert out["test"] == f"one-sided Mann-Whitney U (suspect scores stochastically greater than reference scores), {how}"


def test_set_test_permutations_are_seeded_and_empty_sets_refused():
    x, y = list(np.r_[np.arange(9.0), 3.0]), list(np.arange(9.0))  # ties, 9 reference images: permutation
    a, b = inference.set_test(x, y, seed=1), inference.set_test(x, y, seed=2)
    assert a["test"].endswith("because of ties in a small sample")
    assert a == inference.set_test(x, y, seed=1) and a["p_value"] != b["p_value"]
    for sus, ref in (([], [1.0]), ([1.0], [])):
        with pytest.raises(ValueError, match="^the set-level test needs at least one suspect and one reference image$"):
            inference.set_test(sus, ref)


def test_verdict_texts():
    yes = inference.verdict(0.01, 0.01, 0.75, "attack 'pia'")
    assert yes == (
        "Evidence that the suspect set was used for training: with attack 'pia' the suspects score higher than "
        "the reference (p = 0.01 <= alpha = 0.01; AUC 0.75: a random suspect outscores a random reference image "
        "75% of the time). At least some suspects look like training members; the test does not say which or "
        f"how many. {inference.ASSUMPTION}"
    )
    no = inference.verdict(0.0101, 0.01)
    assert no == (
        "No significant evidence at alpha = 0.01 that the suspect set was used (with this attack: p = 0.0101). "
        "This does not show the set was not used: the attack may be too weak for this model or only a few "
        f"suspects may have been used. {inference.ASSUMPTION}"
    )
    assert inference.ASSUMPTION.startswith("This assumes the reference images") and inference.ASSUMPTION.endswith("small p-value.")


@FAST
@given(st.lists(st.floats(1e-12, 1.0), min_size=2, max_size=5), st.sampled_from(["bonferroni", "fisher"]))
def test_combine_by_hand(ps, method):
    named = {f"a{i}": p for i, p in enumerate(ps)}
    out = inference.combine(named, method, 0.05)
    m = len(ps)
    assert out["method"] == method and out["attacks"] == list(named) and out["n_attacks"] == m and out["alpha"] == 0.05
    if method == "bonferroni":
        assert out["p_value"] == min(1.0, m * min(ps))
        assert out["note"].startswith(f"Bonferroni: {m} x the smallest")
    else:
        stat = -2 * sum(math.log(p) for p in ps)
        assert out["statistic"] == pytest.approx(stat, rel=1e-12)
        assert out["p_value"] == pytest.approx(stats.chi2.sf(stat, 2 * m), rel=1e-9, abs=1e-300)
        assert f"chi-square with {2 * m} degrees of freedom" in out["note"]
    assert out["verdict"] == inference.verdict(out["p_value"], 0.05, None, f"{m} attacks combined ({method})")


def test_combine_edges():
    clipped = stats.combine_pvalues([1e-300, 0.5], method="fisher").pvalue  # p = 0 taken as 1e-300: no log(0)
    assert inference.combine({"a": 0.0, "b": 0.5}, "fisher", 0.05)["p_value"] == clipped > 0
    one = inference.combine({"a": 0.3}, "fisher", 0.05)
    assert one["p_value"] == 0.3 and one["note"] == "a single attack: its p-value, nothing combined"
    assert one["verdict"] == inference.verdict(0.3, 0.05, None, "attack 'a'")
    for ps, method in (({"a": 0.3}, "none"), ({}, "bonferroni")):
        out = inference.combine(ps, method, 0.05)
        assert out["p_value"] is None and out["verdict"].startswith("Attacks not combined (inference.combine: none)")
    with pytest.raises(ValueError, match="unknown combination method 'max'"):
        inference.combine({"a": 0.1, "b": 0.2}, "max", 0.05)


def test_copyright_inference_entry_by_hand():
    sus, ref = np.array([9.0, 2.0, 5.5]), np.arange(10.0)
    entry, p, flags = inference.copyright_inference(sus, ref, alpha=0.1, seed=0, name="pia")
    cal, test = inference.calibrated_threshold(ref, 0.1), inference.set_test(sus, ref, 0)
    np.testing.assert_array_equal(p, [p_by_hand(s, ref) for s in sus])
    np.testing.assert_array_equal(flags, [s > cal["threshold"] for s in sus])
    assert entry == {
        "p_value": test["p_value"], "effect_auc": test["effect_auc"], "n_suspects": 3, "n_reference": 10, "alpha": 0.1,
        "threshold": cal["threshold"], "flagged": int(flags.sum()),
        "verdict": inference.verdict(test["p_value"], 0.1, test["effect_auc"], "attack 'pia'"), "test": test["test"],
        "u_statistic": test["u_statistic"], "per_image_fpr": 0.1, "expected_false_flags": 0.1 * 3,
        "reference_above_threshold": cal["reference_fpr"], "notes": [],
    }
    tiny, _, _ = inference.copyright_inference([5.0], [1.0, 2.0], alpha=0.01)
    assert tiny["verdict"] == inference.verdict(tiny["p_value"], 0.01, tiny["effect_auc"], "this attack")
    assert tiny["notes"][0] == inference.calibrated_threshold([1.0, 2.0], 0.01)["note"]
    assert tiny["notes"][1] == (
        "with 1 suspects and 2 reference images the set-level test cannot reach alpha = 0.01 "
        "(smallest possible p = 0.333): add images"
    )
    # exactly reachable: min p = 1 / C(n, k) == alpha gives no note
    reach, _, _ = inference.copyright_inference(np.arange(10.0, 12.0), np.arange(17.0), alpha=1 / math.comb(19, 2))
    assert not any("cannot reach" in n for n in reach["notes"])


def test_flags_follow_the_p_values_whatever_the_score_dtypes():
    """float32 suspects against a float64 reference: 0.1 in float32 is above 0.1 in float64, so
    the suspect is flagged exactly as its p-value (<= alpha) says; comparing in float32 would not."""
    sus, ref = np.float32([0.1, -100.0]), np.r_[0.2, 0.1, -np.arange(1.0, 18.0)]
    entry, p, flags = inference.copyright_inference(sus, ref, alpha=0.1)
    assert entry["threshold"] == 0.1 and p[0] == pytest.approx(0.1) and p[0] <= 0.1
    assert flags.tolist() == [True, False] and entry["flagged"] == 1


@FAST
@given(st.lists(st.integers(-3, 3).map(float), min_size=2, max_size=12))
def test_leave_one_out_p_values_by_hand(ref):
    want = [(1 + sum(r >= s for j, r in enumerate(ref) if j != i)) / len(ref) for i, s in enumerate(ref)]
    np.testing.assert_allclose(inference._loo_p_values(ref), want, rtol=0, atol=1e-15)


def _rows(attack: str, scores: dict[str, tuple[str, float]], split: str = "evaluation") -> list:
    return [SimpleNamespace(attack=attack, image_id=i, label=lab, score=s, split=split, flagged="", p_value="")
            for i, (lab, s) in scores.items()]


def test_set_inference_fills_rows_and_combines():
    a = {"s0": ("suspect", 9.0), "s1": ("suspect", 2.5), "r0": ("reference", 1.0), "r1": ("reference", 3.0),
         "r2": ("reference", 2.0), "r3": ("reference", 9.5)}
    b = {k: (lab, -s) for k, (lab, s) in a.items()}
    rows = _rows("a", a) + _rows("b", b) + _rows("a", {"c0": ("suspect", 100.0)}, split="calibration")
    block = inference.set_inference(rows, 0.5, "bonferroni", seed=0)
    sus, ref = np.array([9.0, 2.5]), np.array([1.0, 3.0, 2.0, 9.5])
    entry, p, flags = inference.copyright_inference(sus, ref, 0.5, 0, "a")
    assert entry["threshold"] == 3.0  # floor(0.5 x 5) - 1 = 1 reference score allowed at or above
    assert block["a"]["notes"][-1] == (
        "only the held-out (evaluation) split is tested; the images its learned scorer or combination was fitted on are left out"
    )
    assert {k: v for k, v in block["a"].items() if k != "notes"} == {k: v for k, v in entry.items() if k != "notes"}
    assert "notes" in block["b"] and not any(n.startswith("only the held-out") for n in block["b"]["notes"])
    by_id = {(r.attack, r.image_id): r for r in rows}
    assert [by_id[("a", i)].flagged for i in ("s0", "s1", "r0", "r1", "r2", "r3")] == ["true", "false", "false", "false", "false", "true"]
    for i, img in enumerate(("s0", "s1")):
        assert by_id[("a", img)].p_value == repr(float(p[i])) == repr(float(p_by_hand(sus[i], ref)))
    loo = inference._loo_p_values(ref)
    for i, img in enumerate(("r0", "r1", "r2", "r3")):
        assert by_id[("a", img)].p_value == repr(float(loo[i]))
    assert by_id[("a", "c0")].p_value == "" and by_id[("a", "c0")].flagged == ""
    assert block["combined"] == inference.combine({"a": block["a"]["p_value"], "b": block["b"]["p_value"]}, "bonferroni", 0.5)
    assert list(block) == ["a", "b", "combined"]


def test_inference_passes_its_seed_and_defaults_on():
    """Ties in a small sample with more than 9999 splits: the permutation test's seed shows in the p-value."""
    sus, ref = [float(i % 4) for i in range(9)], [float(i % 3) for i in range(20)]
    p = inference.copyright_inference(sus, ref, 0.05, 1)[0]["p_value"]
    assert p == inference.set_test(sus, ref, 1)["p_value"]
    rows = _rows("a", {f"s{i}": ("suspect", v) for i, v in enumerate(sus)} | {f"r{i}": ("reference", v) for i, v in enumerate(ref)})
    assert inference.set_inference(rows, 0.05, "bonferroni", 1)["a"]["p_value"] == p
    assert inference.copyright_inference(sus, ref)[0] == inference.copyright_inference(sus, ref, 0.01, 0, None)[0]
    assert inference.set_test(sus, ref) == inference.set_test(sus, ref, 0)
    big = _rows("a", {f"s{i}": ("suspect", float(i % 3)) for i in range(8)} | {f"r{i}": ("reference", float(i % 4)) for i in range(9)})
    by_seed = {seed: inference.set_inference(big, 0.05, "rank", seed, permutations=99)["combined"]["p_value"] for seed in (1, 2)}
    assert by_seed[1] == inference.rank_block({"a": big}, 0.05, 1, 99)["p_value"] != by_seed[2]
    tiny = _rows("a", {"s0": ("suspect", 5.0), "s1": ("suspect", 4.0), "r0": ("reference", 0.0), "r1": ("reference", 2.0)})
    default = inference.set_inference(tiny, 0.05, "rank", 1)["combined"]
    assert default["permutations"] == 9999 and default == inference.rank_block({"a": tiny}, 0.05, 1, 9999)


def test_set_inference_without_both_groups_and_rank():
    rows = _rows("a", {"s0": ("suspect", 1.0)}) + _rows("b", {"s0": ("suspect", 1.0), "r0": ("reference", 0.0)})
    block = inference.set_inference(rows, 0.05, "bonferroni", seed=0)
    assert block["a"] == {"p_value": None, "verdict": "not enough suspects or reference images to test", "notes": []}
    assert block["combined"]["attacks"] == ["b"]
    rows = _rows("a", {"s0": ("suspect", 5.0), "s1": ("suspect", 4.0), "r0": ("reference", 0.0), "r1": ("reference", 1.0)})
    rows += _rows("e", {"s0": ("suspect", 5.0), "s1": ("suspect", 4.0), "r0": ("reference", 0.0), "r1": ("reference", 1.0)})
    ranked = inference.set_inference(rows, 0.05, "rank", seed=1, permutations=99, exclude={"e"})
    assert ranked["combined"]["method"] == "rank" and ranked["combined"]["attacks"] == ["a"]
    assert ranked["combined"]["verdict"] == inference.verdict(ranked["combined"]["p_value"], 0.05, None, "attack 'a'")


def test_rank_block_by_hand():
    from audit_core.stats.rank_test import combined_rank_test

    rows = {
        "a": _rows("a", {"s0": ("suspect", 5.0), "s1": ("suspect", 4.0), "r0": ("reference", 0.0), "r1": ("reference", 1.0),
                         "x": ("reference", 2.0)}) + _rows("a", {"c": ("suspect", 9.0)}, split="calibration"),
        "b": _rows("b", {"s0": ("suspect", 3.0), "s1": ("suspect", 6.0), "r0": ("reference", 1.0), "r1": ("reference", 0.5)})
        + _rows("b", {"c": ("suspect", 9.0)}, split="calibration"),  # in every attack, but a calibration row
    }
    out = inference.rank_block(rows, 0.05, seed=2, permutations=199)
    table = np.array([[5.0, 3.0], [4.0, 6.0], [0.0, 1.0], [1.0, 0.5]])
    want = combined_rank_test(table, np.array([True, True, False, False]), ["a", "b"], 0.05, 2, 199)
    want["verdict"] = inference.verdict(want["p_value"], 0.05, None, "2 attacks combined (rank, permutation)")
    assert out == want
    empty = {"method": "rank", "attacks": [], "n_attacks": 0, "alpha": 0.05, "p_value": None}
    assert inference.rank_block({}, 0.05, 0, 99) == {**empty, "verdict": "no attack could be tested"}
    only = {"a": _rows("a", {"s0": ("suspect", 5.0)})}
    assert inference.rank_block(only, 0.05, 0, 99) == {
        **empty, "attacks": ["a"], "n_attacks": 1, "verdict": "not enough suspects or reference images to test"}
