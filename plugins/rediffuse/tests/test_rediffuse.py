"""Tests of the rediffuse plugin on hand-checkable targets: the score equals ReDiffuse computed by
hand, the attack calls nothing but the variation API (all n draws in one call), params are
validated with exit 2, target-dependent defaults, determinism, and the learned scorer."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict

from audit_core import hookimpl, seeding
from audit_core.plugin import manager as plugins
from audit_core.plugin.attacks import AttackContext, Batch
from audit_core.builtins.distances import ssim_index
from audit_core.base.errors import ConfigError
from audit_core.plugin.targets import VARIATION, Target
from audit_core.testing import ToyParams, VariationOnlyTarget, no_traceback
from audit_rediffuse import LATENT_DEFAULTS, PIXEL_DEFAULTS, ReDiffuse, ReDiffuseParams

T = 1000
SHRINK, NOISE = 0.8, 0.1  # the recording target's closed form: V(x) = SHRINK x + NOISE z(seed)


# ---------------------------------------------------------------------- test targets
class RecParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    image_size: int = 8
    channels: int = 1


class BlackBoxTarget(Target):
    """A black-box target written for these tests: it offers ``variation`` and nothing else and
    records every call. ``V(x, t, k) = 0.8 x + 0.1 z`` with ``z`` drawn from the row's seed."""

    name = "bb-base"
    kind = "pixel"
    capabilities = frozenset({VARIATION})
    Params = RecParams

    def __init__(self, params=None, context=None):
        super().__init__(params or RecParams(), context)
        self.image_size, self.channels = self.params.image_size, self.params.channels
        self.alphas_cumprod = None  # unknown, like a remote API
        self.calls: list[dict] = []

    def _variation(self, x, t, k, seeds, captions):
        self.calls.append({"rows": x.shape[0], "t": t, "k": k, "seeds": list(seeds), "x": x.clone(), "captions": captions})
        z = seeding.randn(x.shape[1:], seeds, device=x.device)
        self.stats.nfe += x.shape[0] * (t // k)  # as if a DDIM server reported its U-Net calls
        return SHRINK * x + NOISE * z


class RecordingVariationTarget(BlackBoxTarget):
    """The same, failing loudly if anything but the variation API is used."""

    name = "rec-variation"

    def encode(self, x, captions=None):
        raise AssertionError("rediffuse must only use the variation API")

    def decode(self, z, captions=None):
        raise AssertionError("rediffuse must only use the variation API")

    def eps(self, z_t, t, captions=None):
        raise AssertionError("rediffuse must only use the variation API")


class RecordingLatentTarget(RecordingVariationTarget):
    """The same, declared as a latent model (so rediffuse picks its latent variant)."""

    name = "rec-latent"
    kind = "latent"


class NoVaeLatentTarget(BlackBoxTarget):
    """A latent model behind a variation API, with no encode/decode of its own."""

    name = "bb-latent"
    kind = "latent"


class VaeLatentTarget(BlackBoxTarget):
    """A latent target with a (lossy) VAE: decode(encode(x)) = 0.9 x + 0.05."""

    name = "rec-latent-vae"
    kind = "latent"

    def encode(self, x, captions=None):
        return 0.5 * x

    def decode(self, z, captions=None):
        return 1.8 * z + 0.05


class RecPlugin:
    @hookimpl
    def register_targets(self, register):
        register(RecordingVariationTarget)
        register(RecordingLatentTarget)
        register(VaeLatentTarget)


# ---------------------------------------------------------------------- helpers
def make_attack(target, name="rediffuse", **params) -> ReDiffuse:
    values = {**ReDiffuse.defaults_for(target), **params}
    ctx = AttackContext(name=name, seed_key=name, run_seed=0, distances=plugins.registry("distances"))
    a = ReDiffuse(ReDiffuseParams(**values), target, ctx)
    a.check()
    return a


def make_batch(b=3, seed=0, size=8, ids=None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 1, size, size, generator=g) * 2 - 1
    return Batch(images=images, ids=ids or [f"img{i}" for i in range(b)], captions=[None] * b, run_seed=0, seed_key="rediffuse")


def abar_linear(t: int) -> float:
    """abar[t] of the linear DDPM schedule (betas 1e-4 .. 0.02), by hand."""
    return math.prod(1.0 - (1e-4 + i * (0.02 - 1e-4) / (T - 1)) for i in range(t + 1))


def noise_by_hand(seed: int, shape) -> np.ndarray:
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g).double().numpy()


@pytest.fixture
def rec_plugin(register_plugin):
    return register_plugin(RecPlugin(), name="rediffuse-test-targets")


@pytest.fixture
def run_cfg(toy_plugin, rec_plugin, image_folder, write_config):
    members = image_folder("members", n=5, seed=1)
    nonmembers = image_folder("nonmembers", n=5, seed=2)

    def make(target="toy-variation", params=None, **over):
        cfg = {
            "run": {"name": "rd", "seed": 0, "device": "cpu", "batch_size": 4},
            "target": {"plugin": target},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": [{"plugin": "rediffuse", "params": params or {}}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
        }
        cfg.update(over)
        return write_config(cfg)

    return make


def results(out) -> dict:
    return json.loads((out / "results.json").read_text())


# ---------------------------------------------------------------------- the formula, by hand
@pytest.mark.parametrize("t,k,n", [(200, 100, 10), (60, 20, 3)])
def test_score_by_hand_on_toy_target(t, k, n):
    """toy-variation: eps(x, s) = 0.4 x + 0.7 s / T; V = seeded noise to t, DDIM back (by hand
    in float64), x_bar = mean of n, score = -sum((x - x_bar)^2)."""
    target = VariationOnlyTarget(ToyParams(scale=0.4, shift=0.7))
    batch = make_batch()
    out = make_attack(target, t=t, k=k, n=n).score(batch)
    x = batch.images.double().numpy()
    want, bars = [], []
    for i, image_id in enumerate(batch.ids):
        draws = []
        for d in range(n):
            z = noise_by_hand(seeding.derive_seed(0, "rediffuse", image_id, d), x.shape[1:])
            a = abar_linear(t)
            y = math.sqrt(a) * x[i] + math.sqrt(1 - a) * z
            for cur in range(t, 0, -k):
                e = 0.4 * y + 0.7 * cur / T
                a_t, a_s = abar_linear(cur), abar_linear(cur - k)
                y = math.sqrt(a_s) * (y - math.sqrt(1 - a_t) * e) / math.sqrt(a_t) + math.sqrt(1 - a_s) * e
            draws.append(y)
        x_bar = np.mean(draws, axis=0)
        bars.append(x_bar)
        want.append(-((x[i] - x_bar) ** 2).sum())
    np.testing.assert_allclose(out.scores.double().numpy(), want, rtol=1e-4)
    np.testing.assert_allclose(out.reconstructions.double().numpy(), np.stack(bars), atol=1e-5)
    np.testing.assert_allclose(out.residuals.double().numpy(), np.abs(x - np.stack(bars)), atol=1e-5)
    assert target.stats.queries == 3 * n and target.stats.nfe == 3 * n * (t // k)


@pytest.mark.parametrize("distance", ["l1", "mse", "ssim"])
def test_other_distances_by_hand(distance):
    target = RecordingVariationTarget()
    batch = make_batch()
    out = make_attack(target, t=100, k=50, n=4, distance=distance).score(batch)
    x = batch.images.double()
    seeds = batch.seed_matrix(4)
    z = torch.stack([torch.as_tensor(noise_by_hand(s, x.shape[1:])) for s in seeds]).reshape(3, 4, *x.shape[1:])
    x_bar = SHRINK * x + NOISE * z.mean(1)
    if distance == "l1":
        want = -(x - x_bar).abs().flatten(1).sum(1)
    elif distance == "mse":
        want = -((x - x_bar) ** 2).flatten(1).mean(1)
    else:  # the score is the SSIM index itself
        want = ssim_index(x, x_bar)
    np.testing.assert_allclose(out.scores.double().numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_latent_variant_compares_two_reconstructions_with_ssim():
    target = RecordingLatentTarget()
    a = make_attack(target)  # latent defaults: t=10, k=10, n=1, ssim; draws 0 and 1
    assert (a.variant, a.params.t, a.params.k, a.params.n, a.params.distance) == ("latent", 10, 10, 1, "ssim")
    batch = make_batch()
    out = a.score(batch)
    x = batch.images.double()
    rec = [
        torch.stack([SHRINK * x[i] + NOISE * torch.as_tensor(noise_by_hand(seeding.derive_seed(0, "rediffuse", img, d), x.shape[1:]))
                     for i, img in enumerate(batch.ids)])
        for d in (0, 1)
    ]
    np.testing.assert_allclose(out.scores.numpy(), ssim_index(rec[0], rec[1]).numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.residuals.double().numpy(), (rec[0] - rec[1]).abs().numpy(), atol=1e-6)
    assert len(target.calls) == 1 and target.calls[0]["rows"] == 6  # both draws in one call


def test_latent_variant_with_n_averages_even_and_odd_draws():
    target = RecordingLatentTarget()
    batch = make_batch(b=2)
    out = make_attack(target, n=3, distance="l2").score(batch)
    x = batch.images.double()
    seeds = batch.seed_matrix(6)
    v = torch.stack([SHRINK * x[j // 6] + NOISE * torch.as_tensor(noise_by_hand(s, x.shape[1:])) for j, s in enumerate(seeds)])
    v = v.reshape(2, 6, *x.shape[1:])
    want = -((v[:, 0::2].mean(1) - v[:, 1::2].mean(1)) ** 2).flatten(1).sum(1)
    np.testing.assert_allclose(out.scores.double().numpy(), want.numpy(), rtol=1e-5)
    assert [c["rows"] for c in target.calls] == [12]


def test_latent_roundtrip_reference_uses_the_vae():
    target = VaeLatentTarget()
    batch = make_batch()
    a = make_attack(target, latent_reference="roundtrip")
    out = a.score(batch)
    x = batch.images.double()
    rec1 = torch.stack([SHRINK * x[i] + NOISE * torch.as_tensor(noise_by_hand(seeding.derive_seed(0, "rediffuse", img, 0), x.shape[1:]))
                        for i, img in enumerate(batch.ids)])
    ref = 0.9 * x + 0.05
    np.testing.assert_allclose(out.scores.numpy(), ssim_index(rec1, ref).numpy(), rtol=1e-5)
    assert [c["rows"] for c in target.calls] == [3]  # n=1 query per image, the VAE is the reference
    assert a.describe()["latent_reference"] == "roundtrip" and a.describe()["expected_queries_per_image"] == 1


def test_roundtrip_refused_without_a_vae_or_on_the_pixel_variant():
    with pytest.raises(ConfigError, match="latent_reference=roundtrip needs a target with a VAE"):
        make_attack(NoVaeLatentTarget(), latent_reference="roundtrip")
    with pytest.raises(ConfigError, match="latent variant only"):
        make_attack(VaeLatentTarget(), variant="pixel", latent_reference="roundtrip")


# ---------------------------------------------------------------------- black-box, batching, seeds
def test_only_the_variation_api_is_used_and_n_draws_go_in_one_call():
    target = RecordingVariationTarget()  # encode/decode/eps raise
    batch = make_batch(b=3)
    a = make_attack(target, t=100, k=50, n=4)
    a.score(batch)
    assert len(target.calls) == 1
    call = target.calls[0]
    assert call["rows"] == 12 and (call["t"], call["k"]) == (100, 50)
    assert call["seeds"] == batch.seed_matrix(4)
    for i in range(3):  # image-major rows: i*n .. i*n+n-1 are image i
        assert torch.equal(call["x"][4 * i : 4 * i + 4], batch.images[i].expand(4, -1, -1, -1))
    assert target.stats.queries == 12


def test_first_m_draws_equal_an_m_draw_run():
    """The sweep property: n=1's score is the l2 to the first of n=10's draws."""
    batch = make_batch()
    t10, t1 = RecordingVariationTarget(), RecordingVariationTarget()
    make_attack(t10, n=10).score(batch)
    out1 = make_attack(t1, n=1).score(batch)
    seeds10 = t10.calls[0]["seeds"]
    assert t1.calls[0]["seeds"] == seeds10[0::10]
    x = batch.images
    first = SHRINK * x + NOISE * seeding.randn(x.shape[1:], seeds10[0::10])
    torch.testing.assert_close(out1.scores, -((x - first) ** 2).flatten(1).sum(1))


def test_scores_do_not_depend_on_batching():
    target = VariationOnlyTarget(ToyParams(scale=0.3, shift=0.2))
    big = make_batch(b=6, seed=4)
    a = make_attack(target, t=100, k=50, n=3)
    whole = a.score(big).scores
    parts = torch.cat([
        a.score(Batch(images=big.images[i : i + j], ids=big.ids[i : i + j], captions=[None] * j, seed_key="rediffuse")).scores
        for i, j in ((0, 1), (1, 2), (3, 3))
    ])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)


def test_cli_scores_identical_across_batch_sizes(run_cfg, audit_cli, tmp_path):
    cfg = run_cfg(params={"t": 100, "k": 50, "n": 3})
    a, b = tmp_path / "a", tmp_path / "b"
    assert audit_cli("run", cfg, "--output", a, "--set", "run.batch_size=1")[0] == 0
    assert audit_cli("run", cfg, "--output", b, "--set", "run.batch_size=7")[0] == 0
    assert (a / "scores.csv").read_text() == (b / "scores.csv").read_text()


def test_runs_end_to_end_on_a_variation_only_target(run_cfg, audit_cli, tmp_path):
    out = tmp_path / "run"
    code, output = audit_cli("run", run_cfg("rec-variation", {"t": 100, "k": 50, "n": 3}), "--output", out)
    assert code == 0, output
    r = results(out)
    entry = r["attacks"]["rediffuse"]
    assert r["target"]["capabilities"] == ["variation"]
    assert entry["requires"] == ["variation"]
    assert entry["queries_per_image"] == 3 and entry["nfe_per_image"] == 6  # n x t/k
    assert entry["variant"] == "pixel" and entry["distance"] == "l2"
    assert entry["params"] == {
        "preset": None, "variant": "auto", "t": 100, "k": 50, "n": 3, "max_n": 10, "min_n": 1, "stop_z": 2.5,
        "stop_threshold": None, "stop_model": None, "distance": "l2", "clip": False, "latent_reference": "variation",
    }
    assert {g["kind"] for g in entry["gallery"]} == {"most member-like", "least member-like"}
    assert all((out / g["reconstruction"]).exists() and (out / g["residual"]).exists() for g in entry["gallery"])
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 10 and all(float(r["score"]) <= 0 for r in rows)


# ---------------------------------------------------------------------- defaults and validation
def test_defaults_depend_on_the_target_kind_and_user_values_win(run_cfg, audit_cli, tmp_path):
    assert ReDiffuse.defaults_for(VariationOnlyTarget(ToyParams())) == PIXEL_DEFAULTS == {"t": 200, "k": 100, "n": 10, "distance": "l2"}
    assert ReDiffuse.defaults_for(RecordingLatentTarget()) == LATENT_DEFAULTS == {"t": 10, "k": 10, "n": 1, "distance": "ssim"}
    out = tmp_path / "pix"
    assert audit_cli("run", run_cfg("toy-variation"), "--output", out)[0] == 0
    e = results(out)["attacks"]["rediffuse"]
    assert (e["params"]["t"], e["params"]["k"], e["params"]["n"], e["params"]["distance"]) == (200, 100, 10, "l2")
    assert e["queries_per_image"] == 10 and e["nfe_per_image"] == 20  # the paper's 20 NFEs per image
    out = tmp_path / "lat"
    assert audit_cli("run", run_cfg("rec-latent", {"n": 2}), "--output", out)[0] == 0
    e = results(out)["attacks"]["rediffuse"]
    assert (e["params"]["t"], e["params"]["k"], e["params"]["n"], e["params"]["distance"]) == (10, 10, 2, "ssim")
    assert e["variant"] == "latent" and e["queries_per_image"] == 4  # two reconstructions of n=2 each


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"t": 0}, "t=0"),
        ({"t": 1000}, "t=1000"),
        ({"t": 200, "k": 30}, "k=30"),
        ({"k": 0}, "k=0"),
        ({"n": 0}, "params.n"),
        ({"distance": "cosine"}, "unknown distance 'cosine'"),
        ({"variant": "voxel"}, "params.variant"),
        ({"latent_reference": "roundtrip"}, "latent_reference"),
        ({"steps": 3}, "params.steps"),
    ],
)
def test_invalid_params_exit_2_naming_the_param(run_cfg, audit_cli, tmp_path, params, needle):
    out = tmp_path / "out"
    code, output = audit_cli("run", run_cfg(params=params), "--output", out)
    assert code == 2, output
    assert needle in " ".join(output.split()), output  # rich may wrap the paragraph
    assert no_traceback(output)
    assert not out.exists()  # refused before anything is written


# ---------------------------------------------------------------------- learned scorer
def test_classifier_scorer_runs_on_residual_maps(run_cfg, audit_cli, tmp_path):
    out = tmp_path / "nn"
    cfg = run_cfg(params={"t": 100, "k": 50, "n": 2})
    code, output = audit_cli("run", cfg, "--output", out, "--set", "attacks.0.scorer=classifier")
    assert code == 0, output
    e = results(out)["attacks"]["rediffuse"]
    assert e["scorer"]["kind"] == "classifier"
    assert e["n_members"] == 4 and e["n_nonmembers"] == 4  # metrics on the 80 % held out
    assert "tpr_at_1pct_fpr" in e["metrics"] and "tpr_at_1pct_fpr" in e["threshold_scorer_metrics"]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert {r["split"] for r in rows} == {"calibration", "evaluation"}


def test_classifier_paper_recipe_is_the_official_nns_recipe(run_cfg, audit_cli, tmp_path):
    out = tmp_path / "paper"
    cfg = run_cfg(params={"t": 100, "k": 50, "n": 2})
    code, output = audit_cli("run", cfg, "--output", out, "--set", 'attacks.0.scorer={"kind": "classifier", "recipe": "paper"}')
    assert code == 0, output
    s = results(out)["attacks"]["rediffuse"]["scorer"]
    assert s["recipe_name"] == "paper" and s["epochs"] == 15 and s["lr"] == 1e-3
    assert "width 64, imagenet stem" in s["model"] and "constant" in s["recipe"] and "last epoch" in s["recipe"]
    assert len(s["loss_curve"]) == 15 and s["n_validation"] == 0


# ---------------------------------------------------------------------- presets
def test_presets_fill_the_official_settings_and_user_values_win(run_cfg, audit_cli, tmp_path):
    out = tmp_path / "ddim"
    assert audit_cli("run", run_cfg(params={"preset": "paper-ddim", "n": 2}), "--output", out)[0] == 0
    e = results(out)["attacks"]["rediffuse"]
    assert {k: e["params"][k] for k in ("preset", "variant", "t", "k", "n", "distance")} == {
        "preset": "paper-ddim", "variant": "pixel", "t": 200, "k": 100, "n": 2, "distance": "l1"}
    assert e["preset"] == "paper-ddim" and "recipe: paper" in e["preset_notes"][0]
    out = tmp_path / "sd"
    assert audit_cli("run", run_cfg("rec-latent-vae", {"preset": "paper-sd"}), "--output", out)[0] == 0
    e = results(out)["attacks"]["rediffuse"]
    assert {k: e["params"][k] for k in ("variant", "t", "k", "n", "distance", "latent_reference")} == {
        "variant": "latent", "t": 50, "k": 50, "n": 1, "distance": "ssim-grey-uint8", "latent_reference": "roundtrip"}
    assert e["queries_per_image"] == 1 and e["statistic"].startswith("SSIM")


def test_unknown_preset_exits_2_listing_the_presets(run_cfg, audit_cli, tmp_path):
    out = tmp_path / "bad"
    code, output = audit_cli("run", run_cfg(params={"preset": "paper-dit"}), "--output", out)
    text = " ".join(output.split())
    assert code == 2 and "attacks[0].params.preset" in text and "paper-ddim, paper-sd" in text and no_traceback(output)
    assert not out.exists()


def test_ssim_grey_uint8_matches_scikit_image_formula():
    """The distance against an independent implementation of skimage's structural_similarity
    (scipy's uniform filter with reflection, cropped borders) on PIL's greyscale conversion."""
    from PIL import Image
    from scipy.ndimage import uniform_filter

    from audit_core.builtins.distances import ssim_grey_uint8

    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(2, 3, 16, 16, generator=g)).clamp(-1, 1)

    def grey(x):
        u8 = ((x.permute(1, 2, 0).numpy().astype(np.float64) + 1) * 127.5).round().astype(np.uint8)
        return np.asarray(Image.fromarray(u8).convert("L"), dtype=np.float64)

    def skimage_ssim(im1, im2, data_range):
        f = lambda v: uniform_filter(v, size=7, mode="reflect")  # noqa: E731
        cov = 49 / 48
        ux, uy = f(im1), f(im2)
        vx, vy, vxy = cov * (f(im1 * im1) - ux * ux), cov * (f(im2 * im2) - uy * uy), cov * (f(im1 * im2) - ux * uy)
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        return s[3:-3, 3:-3].mean()

    want = []
    for i in range(2):
        r, p = grey(a[i]), grey(b[i])
        want.append(1 - skimage_ssim(p, r, r.max() - r.min()))  # range of the first argument
    np.testing.assert_allclose(ssim_grey_uint8(a, b).numpy(), want, rtol=1e-9)
