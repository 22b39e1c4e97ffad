"""Tests of the pia plugin: PIA and PIAN scores equal the formulas computed by hand, 2 NFEs,
the latent default t=500, grey-box access enforced, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from audit_pia import PIA, PIAParams

from audit_core import hookimpl
from audit_core.plugin.attacks import AttackContext
from audit_core.base.errors import ConfigError
from audit_core.testing import FakeLatentTarget as FakeLatent
from audit_core.testing import (
    ToyParams,
    ToyTarget,
    abar_linear,
    abar_scaled,
    assert_batch_size_independent,
    make_batch,
    no_traceback,
)
from audit_core.testing import fake_latent_eps as fake_eps

T = 1000

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: more threads only contend
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def attack(target, **params) -> PIA:
    values = {**PIA.defaults_for(target), **params}
    a = PIA(PIAParams(**values), target, AttackContext(name="pia", seed_key="pia"))
    a.check()
    return a


# ---------------------------------------------------------------------- the formula, by hand
@pytest.mark.parametrize("scale, shift, t, p", [(0.5, 0.0, 200, 4), (-0.3, 0.8, 300, 2), (1.1, 0.2, 50, 1.5)])
def test_pia_closed_form_on_linear_toy(scale, shift, t, p):
    """eps = s x + h t/T: e0 = s x, x_t = (sqrt(abar) + sqrt(1-abar) s) x,
    eps(x_t, t) - e0 = s (sqrt(abar) + sqrt(1-abar) s - 1) x + h t/T."""
    target = ToyTarget(ToyParams(scale=scale, shift=shift))
    batch = make_batch()
    out = attack(target, t=t, p=p).score(batch)
    a = abar_linear(t)
    x = batch.images.numpy()
    diff = scale * (math.sqrt(a) + math.sqrt(1 - a) * scale - 1) * x + shift * t / T
    want = -(np.abs(diff) ** p).reshape(3, -1).sum(1)
    np.testing.assert_allclose(out.scores.numpy(), want, rtol=1e-9)


@pytest.mark.parametrize("scale", [0.5, -2.0])
def test_pian_closed_form_on_linear_toy(scale):
    """PIAN: e0 = s x / mean|s x| * sqrt(2/pi) = sign(s) x / mean|x| * sqrt(2/pi), per image."""
    target = ToyTarget(ToyParams(scale=scale, shift=0.3))
    batch = make_batch(b=4, seed=5)
    out = attack(target, variant="pian").score(batch)
    a = abar_linear(200)
    x = batch.images.numpy()
    e0 = np.sign(scale) * x / np.abs(x).mean(axis=(1, 2, 3), keepdims=True) * SQRT_2_OVER_PI
    x_t = math.sqrt(a) * x + math.sqrt(1 - a) * e0
    diff = scale * x_t + 0.3 * 200 / T - e0
    want = -(diff**4).reshape(4, -1).sum(1)
    np.testing.assert_allclose(out.scores.numpy(), want, rtol=1e-9)


@pytest.mark.parametrize("variant", ["pia", "pian"])
def test_latent_target_model_space_captions_schedule_and_t500(variant):
    caps = ["a red cat", None, "x"]
    target = FakeLatent()
    batch = make_batch(captions=caps, seed=2)
    out = attack(target, variant=variant).score(batch)
    assert out.scores.dtype == torch.float64
    a = abar_scaled(500)  # the latent default
    z = 0.5 * batch.images.numpy() + 0.1
    e0 = fake_eps(z, 0, caps)
    if variant == "pian":
        e0 = e0 / np.abs(e0).mean(axis=(1, 2, 3), keepdims=True) * SQRT_2_OVER_PI
    x_t = math.sqrt(a) * z + math.sqrt(1 - a) * e0
    want = -(np.abs(fake_eps(x_t, 500, caps) - e0) ** 4).reshape(3, -1).sum(1)
    np.testing.assert_allclose(out.scores.numpy(), want, rtol=1e-9)
    assert [(rows, t) for rows, t, _ in target.calls] == [(3, 0), (3, 500)]
    assert all(call[2] == caps for call in target.calls)


def test_defaults_depend_on_target_kind():
    assert PIA.defaults_for(ToyTarget(ToyParams())) == {}
    assert PIA.defaults_for(FakeLatent()) == {"t": 500}
    assert PIAParams().t == 200 and PIAParams().p == 4 and PIAParams().variant == "pia"


def test_two_nfe_per_image():
    target = ToyTarget(ToyParams())
    attack(target).score(make_batch(b=5, dtype=torch.float32))
    assert target.stats.nfe == 10 and target.eps_calls == [(5, 0), (5, 200)]


@pytest.mark.parametrize(
    "params, word", [({"t": 0}, "t=0"), ({"t": 1000}, "t=1000"), ({"p": 0}, "p=0"), ({"p": -1.0}, "p=-1")]
)
def test_check_rejects_bad_params_naming_them(params, word):
    a = PIA(PIAParams(**params), ToyTarget(ToyParams()), AttackContext(name="pia", seed_key="pia"))
    with pytest.raises(ConfigError, match=word):
        a.check()


# ---------------------------------------------------------------------- through `audit run`
class FakeLatentPlugin:
    @hookimpl
    def register_targets(self, register):
        register(FakeLatent)


@pytest.fixture
def run_config(toy_run_config, register_plugin):
    register_plugin(FakeLatentPlugin(), name="fake-latent-plugin")

    def make(target="toy", attacks=None, **run):
        attacks = attacks or [{"plugin": "pia"}, {"plugin": "pia", "name": "pian", "params": {"variant": "pian"}}]
        return toy_run_config(attacks, target, **{"name": "pia-test", **run})

    return make


def test_audit_run_reports_exactly_2_nfe_per_image(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(), "--output", tmp_path / "run")
    assert code == 0, output
    attacks = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]
    for name, variant in (("pia", "pia"), ("pian", "pian")):
        assert attacks[name]["nfe_per_image"] == 2
        assert attacks[name]["spent"]["nfe"] == 16
        assert attacks[name]["params"] == {"preset": None, "variant": variant, "t": 200, "p": 4.0}
        assert attacks[name]["variant"] == variant


def test_latent_default_t_500_and_user_value_wins(run_config, audit_cli, tmp_path):
    cfg = run_config(target="fake-latent", attacks=[{"plugin": "pia"}, {"plugin": "pia", "name": "t300", "params": {"t": 300}}])
    code, output = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, output
    attacks = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]
    assert attacks["pia"]["params"]["t"] == 500 and attacks["t300"]["params"]["t"] == 300
    assert attacks["pia"]["nfe_per_image"] == 2


def test_refused_on_variation_only_target(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(target="toy-variation"), "--output", tmp_path / "out")
    assert code == 2, output
    assert "pia" in output and "toy-variation" in output and "noise prediction" in output
    assert no_traceback(output)
    assert not (tmp_path / "out").exists()


def test_bad_param_is_exit_2_naming_it(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(attacks=[{"plugin": "pia", "params": {"p": 0}}]), "--output", tmp_path / "o")
    assert code == 2 and "p=0" in output and no_traceback(output)
    code, output = audit_cli("run", run_config(attacks=[{"plugin": "pia", "params": {"variant": "pan"}}]), "--output", tmp_path / "o")
    assert code == 2 and "variant" in output and no_traceback(output)


def test_deterministic_and_batch_size_independent(run_config, audit_cli, tmp_path):
    assert_batch_size_independent(audit_cli, run_config(), tmp_path)


@pytest.mark.parametrize("variant", ["pia", "pian"])
def test_residual_maps_are_the_per_element_error_in_model_space(variant):
    """residual = |eps(x_t, t) - e0| per latent element, [B, C, h, w], and the score is -sum(residual^p)."""
    caps = ["a red cat", None, "x"]
    target = FakeLatent()
    batch = make_batch(captions=caps, seed=4)
    a = attack(target, variant=variant, p=3)
    assert PIA.residual_maps
    out = a.score(batch)
    z = 0.5 * batch.images.numpy() + 0.1
    e0 = fake_eps(z, 0, caps)
    if variant == "pian":
        e0 = e0 / np.abs(e0).mean(axis=(1, 2, 3), keepdims=True) * SQRT_2_OVER_PI
    x_t = math.sqrt(abar_scaled(500)) * z + math.sqrt(1 - abar_scaled(500)) * e0
    want = np.abs(fake_eps(x_t, 500, caps) - e0)
    assert tuple(out.residuals.shape) == (3, 1, 8, 8)
    np.testing.assert_allclose(out.residuals.numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(out.scores.numpy(), -(want**3).reshape(3, -1).sum(1), rtol=1e-9)
