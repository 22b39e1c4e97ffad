"""Tests of the naive-loss plugin: the score equals the loss computed by hand with the documented
per-image noise, NFE = draws, grey-box access enforced, determinism and batching invariance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from audit_naive_loss import NaiveLoss, NaiveLossParams

from audit_core import hookimpl
from audit_core.plugin.attacks import AttackContext, Batch
from audit_core.base.errors import ConfigError
from audit_core.base.seeding import derive_seed
from audit_core.testing import FakeLatentTarget as FakeLatent
from audit_core.testing import (
    ToyParams,
    ToyTarget,
    abar_linear,
    abar_scaled,
    assert_batch_size_independent,
    no_traceback,
)
from audit_core.testing import make_batch as _make_batch

T = 1000

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: more threads only contend
RUN_SEED, KEY = 7, "naive-loss"


def noise(image_id: str, draw: int, shape=(1, 8, 8)) -> np.ndarray:
    """The documented noise of (image, draw): N(0, I) from a CPU generator seeded with
    derive_seed(run seed, attack seed key, image id, draw)."""
    g = torch.Generator().manual_seed(derive_seed(RUN_SEED, KEY, image_id, draw))
    return torch.randn(shape, generator=g, dtype=torch.float32).double().numpy()



def make_batch(b: int = 3, seed: int = 0, captions=None, dtype=torch.float64):
    return _make_batch(b, seed, captions, dtype, run_seed=RUN_SEED, seed_key=KEY)


def attack(target, **params) -> NaiveLoss:
    a = NaiveLoss(NaiveLossParams(**params), target, AttackContext(name=KEY, seed_key=KEY, run_seed=RUN_SEED))
    a.check()
    return a


# ---------------------------------------------------------------------- the formula, by hand
@pytest.mark.parametrize("scale, shift, t", [(0.5, 0.0, 200), (-0.3, 0.8, 600)])
def test_loss_by_hand_on_linear_toy(scale, shift, t):
    target = ToyTarget(ToyParams(scale=scale, shift=shift))
    batch = make_batch()
    out = attack(target, t=t).score(batch)
    a = abar_linear(t)
    want = []
    for i, image_id in enumerate(batch.ids):
        x, z = batch.images[i].numpy(), noise(image_id, 0)
        x_t = math.sqrt(a) * x + math.sqrt(1 - a) * z
        want.append(-(((scale * x_t + shift * t / T) - z) ** 2).sum())
    np.testing.assert_allclose(out.scores.numpy(), want, rtol=1e-9)


def test_draws_average_the_loss_over_independent_noises_and_captions_follow_rows():
    caps = ["a red cat", None, "x"]
    target = FakeLatent()
    batch = make_batch(captions=caps, seed=3)
    out = attack(target, draws=3).score(batch)
    a = abar_scaled(200)
    want = []
    for i, image_id in enumerate(batch.ids):
        z0 = 0.5 * batch.images[i].numpy() + 0.1
        c = 0.05 * len(caps[i] or "")
        losses = []
        for d in range(3):
            z = noise(image_id, d)
            x_t = math.sqrt(a) * z0 + math.sqrt(1 - a) * z
            losses.append(((np.tanh(x_t) * (1 + 200 / T) + c - z) ** 2).sum())
        want.append(-np.mean(losses))
    np.testing.assert_allclose(out.scores.numpy(), want, rtol=1e-9)
    # one forward pass of B*draws rows, image-major captions, each image encoded once
    assert target.calls == [(9, 200, [c for c in caps for _ in range(3)])]
    assert target.stats.nfe == 9 and target.encoded == 3


def test_first_draws_equal_a_smaller_run():
    """draw d of image i uses batch.seeds(d)[i]: the 1-draw score is the first draw of a 2-draw run."""
    target = ToyTarget(ToyParams(scale=0.7, shift=0.1))
    batch = make_batch(b=2)
    one = attack(target, draws=1).score(batch).scores
    a = abar_linear(200)
    second = []
    for i, image_id in enumerate(batch.ids):
        x, z = batch.images[i].numpy(), noise(image_id, 1)
        x_t = math.sqrt(a) * x + math.sqrt(1 - a) * z
        second.append(-(((0.7 * x_t + 0.1 * 0.2) - z) ** 2).sum())
    two = attack(target, draws=2).score(batch).scores
    np.testing.assert_allclose(two.numpy(), (one.numpy() + np.array(second)) / 2, rtol=1e-9)


def test_noise_is_fresh_per_image_not_per_batch_position():
    target = ToyTarget(ToyParams())
    batch = make_batch(b=3)
    flipped = Batch(images=batch.images.flip(0), ids=batch.ids[::-1], captions=batch.captions,
                    run_seed=RUN_SEED, seed_key=KEY)
    a = attack(target)
    np.testing.assert_allclose(a.score(batch).scores.numpy(), a.score(flipped).scores.flip(0).numpy(), rtol=1e-12)


@pytest.mark.parametrize("draws", [1, 4])
def test_nfe_equals_draws(draws):
    target = ToyTarget(ToyParams())
    attack(target, draws=draws).score(make_batch(b=5, dtype=torch.float32))
    assert target.stats.nfe == 5 * draws and target.eps_calls == [(5 * draws, 200)]


@pytest.mark.parametrize("params, word", [({"t": 0}, "t=0"), ({"t": 1000}, "t=1000"), ({"draws": 0}, "draws=0")])
def test_check_rejects_bad_params_naming_them(params, word):
    a = NaiveLoss(NaiveLossParams(**params), ToyTarget(ToyParams()), AttackContext(name=KEY, seed_key=KEY))
    with pytest.raises(ConfigError, match=word):
        a.check()


# ---------------------------------------------------------------------- through `audit run`
@pytest.fixture
def run_config(toy_run_config):
    def make(target="toy", attacks=None, **run):
        attacks = attacks or [{"plugin": "naive-loss"}, {"plugin": "naive-loss", "name": "loss-x3", "params": {"draws": 3}}]
        return toy_run_config(attacks, target, **{"name": "loss-test", **run})

    return make


def test_audit_run_reports_nfe_equal_to_draws(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(), "--output", tmp_path / "run")
    assert code == 0, output
    attacks = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]
    assert attacks["naive-loss"]["nfe_per_image"] == 1 and attacks["naive-loss"]["spent"]["nfe"] == 8
    assert attacks["loss-x3"]["nfe_per_image"] == 3 and attacks["loss-x3"]["spent"]["nfe"] == 24
    assert attacks["naive-loss"]["params"] == {"preset": None, "t": 200, "draws": 1}


def test_refused_on_variation_only_target(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(target="toy-variation"), "--output", tmp_path / "out")
    assert code == 2, output
    assert "naive-loss" in output and "toy-variation" in output and "noise prediction" in output
    assert no_traceback(output)
    assert not (tmp_path / "out").exists()


def test_bad_param_is_exit_2_naming_it(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(attacks=[{"plugin": "naive-loss", "params": {"t": 1000}}]), "--output", tmp_path / "o")
    assert code == 2 and "t=1000" in output and no_traceback(output)


def test_deterministic_batch_independent_and_seeded(run_config, audit_cli, tmp_path):
    cfg = run_config()
    a = assert_batch_size_independent(audit_cli, cfg, tmp_path)
    assert audit_cli("run", cfg, "--output", tmp_path / "d", "--set", "run.seed=4")[0] == 0
    d = (tmp_path / "d" / "scores.csv").read_text().splitlines()[1:]
    assert [r["score"] for r in a] != [line.rsplit(",", 1)[1] for line in d]

def test_runs_on_a_latent_target(register_plugin, image_folder, write_config, audit_cli, tmp_path):
    class P:
        @hookimpl
        def register_targets(self, register):
            register(FakeLatent)

    register_plugin(P(), name="fake-latent-plugin")
    cfg = write_config({
        "run": {"device": "cpu"},
        "target": {"plugin": "fake-latent"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "naive-loss", "params": {"draws": 2}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    })
    code, output = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]["naive-loss"]["nfe_per_image"] == 2


def test_residual_maps_are_the_mean_absolute_noise_error_over_draws():
    """residual = mean over draws of |eps(x_t, t) - z|, [B, C, H, W]; the score is unchanged."""
    target = ToyTarget(ToyParams(scale=0.6, shift=0.2))
    batch = make_batch(b=2, seed=6)
    assert NaiveLoss.residual_maps
    out = attack(target, draws=2).score(batch)
    a = abar_linear(200)
    maps, scores = [], []
    for i, image_id in enumerate(batch.ids):
        x = batch.images[i].numpy()
        errs = []
        for d in range(2):
            z = noise(image_id, d)
            errs.append((0.6 * (math.sqrt(a) * x + math.sqrt(1 - a) * z) + 0.2 * 0.2) - z)
        maps.append(np.mean(np.abs(errs), axis=0))
        scores.append(-np.mean([(e**2).sum() for e in errs]))
    assert tuple(out.residuals.shape) == (2, 1, 8, 8)
    np.testing.assert_allclose(out.residuals.numpy(), np.stack(maps), rtol=1e-9)
    np.testing.assert_allclose(out.scores.numpy(), scores, rtol=1e-9)
