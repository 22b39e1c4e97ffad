"""Tests of the secmia plugin: the score equals SecMI_stat computed by hand, NFEs are exact,
grey-box access is enforced, results are deterministic, and SecMI_NNs runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from audit_secmia import SecMIA, SecMIParams

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
    no_traceback,
)
from audit_core.testing import fake_latent_eps as fake_eps
from audit_core.testing import make_batch as _make_batch

T = 1000

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: more threads only contend


def hand_step(x, e, a_t, a_s):
    x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
    return math.sqrt(a_s) * x0 + math.sqrt(1 - a_s) * e



def make_batch(b: int = 3, seed: int = 0, captions=None, dtype=torch.float32):
    return _make_batch(b, seed, captions, dtype)


def attack(target, **params) -> SecMIA:
    a = SecMIA(SecMIParams(**params), target, AttackContext(name="secmia", seed_key="secmia"))
    a.check()
    return a


# ---------------------------------------------------------------------- the formula, by hand
@pytest.mark.parametrize("scale", [0.5, -0.3, 1.2])
def test_score_is_secmi_stat_closed_form_on_linear_toy(scale):
    """eps = s x makes every DDIM step t -> s multiply by
    c(t, s) = sqrt(abar_s / abar_t) (1 - sqrt(1 - abar_t) s) + sqrt(1 - abar_s) s, so
    x_tilde = prod c * x and x_hat = c(100, 90) c(90, 100) x_tilde."""
    target = ToyTarget(ToyParams(scale=scale, shift=0.0))
    batch = make_batch(dtype=torch.float64)  # x_hat - x_tilde is small: float32 would round it
    out = attack(target).score(batch)

    def c(t, s):
        at, as_ = abar_linear(t), abar_linear(s)
        return math.sqrt(as_ / at) * (1 - math.sqrt(1 - at) * scale) + math.sqrt(1 - as_) * scale

    c_tilde = math.prod(c(t, t + 10) for t in range(0, 90, 10))
    back = c(90, 100) * c(100, 90)
    x = batch.images.double().numpy()
    want = -((back - 1) ** 2) * c_tilde**2 * (x**2).reshape(3, -1).sum(1)
    np.testing.assert_allclose(out.scores.double().numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(out.residuals.double().numpy(), np.abs(back - 1) * abs(c_tilde) * np.abs(x), rtol=1e-9)
    assert tuple(out.residuals.shape) == (3, 1, 8, 8)  # one map per image, the image's shape


def test_score_by_hand_on_toy_with_shift():
    target = ToyTarget(ToyParams(scale=0.4, shift=0.7))
    batch = make_batch(seed=1)
    out = attack(target, t_sec=60, k=20).score(batch)
    eps = lambda z, t: 0.4 * z + 0.7 * t / T  # noqa: E731
    x = batch.images.double().numpy()
    for t in (0, 20):
        x = hand_step(x, eps(x, t), abar_linear(t), abar_linear(t + 20))
    x_tilde = x
    x_next = hand_step(x_tilde, eps(x_tilde, 40), abar_linear(40), abar_linear(60))
    x_hat = hand_step(x_next, eps(x_next, 60), abar_linear(60), abar_linear(40))
    want = -((x_hat - x_tilde) ** 2).reshape(3, -1).sum(1)
    np.testing.assert_allclose(out.scores.double().numpy(), want, rtol=1e-4)
    assert [t for _, t in target.eps_calls] == [0, 20, 40, 60]


def test_latent_target_model_space_captions_and_schedule():
    """Works on encode(x), passes each row's caption to eps, reads the target's own schedule."""
    caps = ["a red cat", None, "x"]
    target = FakeLatent()
    batch = make_batch(captions=caps, seed=2)
    out = attack(target).score(batch)
    x = 0.5 * batch.images.double().numpy() + 0.1
    for t in range(0, 90, 10):
        x = hand_step(x, fake_eps(x, t, caps), abar_scaled(t), abar_scaled(t + 10))
    x_tilde = x
    x_next = hand_step(x_tilde, fake_eps(x_tilde, 90, caps), abar_scaled(90), abar_scaled(100))
    x_hat = hand_step(x_next, fake_eps(x_next, 100, caps), abar_scaled(100), abar_scaled(90))
    want = -((x_hat - x_tilde) ** 2).reshape(3, -1).sum(1)
    np.testing.assert_allclose(out.scores.double().numpy(), want, rtol=1e-4)
    assert all(call[2] == caps for call in target.calls)
    assert [call[1] for call in target.calls] == list(range(0, 100, 10)) + [100]


def test_nfe_per_image_counts_eleven_in_one_pass_per_step():
    target = ToyTarget(ToyParams())
    attack(target).score(make_batch(b=5))
    assert target.stats.nfe == 5 * 11
    assert target.eps_calls == [(5, t) for t in range(0, 100, 10)] + [(5, 100)]


@pytest.mark.parametrize(
    "params, word",
    [({"t_sec": 0}, "t_sec"), ({"t_sec": 1000}, "t_sec"), ({"t_sec": 100, "k": 30}, "k=30"), ({"k": 0}, "k=0")],
)
def test_check_rejects_bad_params_naming_them(params, word):
    a = SecMIA(SecMIParams(**params), ToyTarget(ToyParams()), AttackContext(name="secmia", seed_key="secmia"))
    with pytest.raises(ConfigError, match=word):
        a.check()


# ---------------------------------------------------------------------- through `audit run`
@pytest.fixture
def run_config(toy_run_config):
    def make(target="toy", attacks=None, **run):
        return toy_run_config(attacks or [{"plugin": "secmia"}], target, **{"name": "secmia-test", **run})

    return make


def test_audit_run_reports_exactly_11_nfe_per_image(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(), "--output", tmp_path / "run")
    assert code == 0, output
    a = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]["secmia"]
    assert a["nfe_per_image"] == 11
    assert a["queries_per_image"] == 0
    assert a["spent"]["nfe"] == 8 * 11
    assert a["params"] == {"preset": None, "t_sec": 100, "k": 10}
    assert a["requires"] == ["noise"]


def test_refused_on_variation_only_target(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(target="toy-variation"), "--output", tmp_path / "out")
    assert code == 2, output
    assert "secmia" in output and "toy-variation" in output and "noise prediction" in output
    assert no_traceback(output)
    assert not (tmp_path / "out").exists()


def test_bad_param_is_exit_2_naming_it(run_config, audit_cli, tmp_path):
    cfg = run_config(attacks=[{"plugin": "secmia", "params": {"t_sec": 100, "k": 30}}])
    code, output = audit_cli("run", cfg, "--output", tmp_path / "out")
    assert code == 2 and "k=30" in output and "t_sec=100" in output and no_traceback(output)


def test_deterministic_and_batch_size_independent(run_config, audit_cli, tmp_path):
    assert_batch_size_independent(audit_cli, run_config(), tmp_path)

def test_secmi_nns_through_the_learned_scorer(run_config, audit_cli, tmp_path):
    cfg = run_config(attacks=[{"plugin": "secmia", "name": "secmi-nns", "scorer": "classifier"}])
    code, output = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, output
    a = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]["secmi-nns"]
    assert a["scorer"]["kind"] == "classifier"
    assert a["nfe_per_image"] == 11
    assert a["n_members"] + a["n_nonmembers"] == 8 - a["scorer"]["n_calibration"]


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
        "attacks": [{"plugin": "secmia", "params": {"t_sec": 40, "k": 20}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    })
    code, output = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]["secmia"]["nfe_per_image"] == 3
