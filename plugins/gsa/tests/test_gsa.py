"""Tests of the gsa plugin: the per-layer gradient norms equal the derivatives computed by hand on
a two-parameter model, and the official code's loop (``loss.backward()``, ``p.grad`` norms) on a
real diffusers U-Net; K NFEs per image; refusal (exit 2, before any query) on targets without
parameter gradients; the classifier fitted on the calibration rows only; resume."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch
import yaml
from audit_gsa import GSA
from audit_gsa.attack import paper_timesteps
from audit_gsa.classifier import fit_logistic, logits

from audit_core import hookimpl, seeding
from audit_core.plugin.attacks import check_access
from audit_core.base.errors import AccessError, ConfigError
from audit_core.plugin.targets import GRADIENTS, NOISE, VARIATION
from audit_core.testing import ToyParams, ToyTarget, make_attack, make_batch, no_traceback
from audit_core.testing.toys import abar_linear

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: more threads only contend
T = 1000


class Linear(torch.nn.Module):
    """``eps(x, t) = w x + b t / T`` with two scalar parameters."""

    def __init__(self, w: float, b: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return self.w * x + self.b * (steps.to(x.dtype) / T).view(-1, *[1] * (x.ndim - 1))


class GradToyTarget(ToyTarget):
    """The toy pixel target with white-box access: its noise predictor is :class:`Linear`."""

    name = "grad-toy"
    capabilities = frozenset({VARIATION, NOISE, GRADIENTS})

    def __init__(self, params=None, context=None):
        super().__init__(params or ToyParams(), context)
        self.net = Linear(self.params.scale, self.params.shift)

    def eps(self, z_t, t, captions=None):
        self.stats.nfe += z_t.shape[0]
        with torch.no_grad():
            return self.net(z_t.double(), torch.full((z_t.shape[0],), int(t))).to(z_t.dtype)

    def grad_network(self):
        return self.net, lambda z, steps, captions: self.net(z.double(), steps)


class GradToyPlugin:
    @hookimpl
    def register_targets(self, register):
        register(GradToyTarget)


def noisy(batch, ts):
    """What GSA feeds the model, by hand: per image, K noises from draws 0..K-1 and x_t per timestep."""
    k = len(ts)
    x = batch.images.double()
    z = seeding.randn(x.shape[1:], batch.seed_matrix(k), dtype=torch.float64).view(len(batch), k, *x.shape[1:])
    a = torch.tensor([abar_linear(t) for t in ts], dtype=torch.float64).view(1, k, 1, 1, 1)
    return x[:, None] * a.sqrt() + (1 - a).sqrt() * z, z


# ---------------------------------------------------------------------- the features, by hand
@pytest.mark.parametrize("variant", ["gsa1", "gsa2"])
def test_norms_equal_the_hand_derivatives_of_the_loss(variant):
    """loss = mean((w x_t + b t/T - z)^2): dL/dw = 2 mean(r x_t), dL/db = 2 mean(r t/T)."""
    w, b, ts = 0.7, -0.4, [10, 300, 700]
    target = GradToyTarget(ToyParams(scale=w, shift=b))
    batch = make_batch(b=3, seed=5, seed_key="gsa")
    attack = make_attack(GSA, target, variant=variant, ts=ts)
    norms = attack.features(batch).numpy()
    x_t, z = noisy(batch, ts)
    tt = torch.tensor(ts, dtype=torch.float64).view(1, -1, 1, 1, 1) / T
    r = w * x_t + b * tt - z  # [B, K, C, H, W]
    if variant == "gsa1":  # the gradient of the loss over the K timesteps together
        gw = (2 * r * x_t).mean(dim=(1, 2, 3, 4)).abs()
        gb = (2 * r * tt).mean(dim=(1, 2, 3, 4)).abs()
    else:  # per timestep, then the mean of the norms
        gw = (2 * r * x_t).mean(dim=(2, 3, 4)).abs().mean(dim=1)
        gb = (2 * r * tt).mean(dim=(2, 3, 4)).abs().mean(dim=1)
    np.testing.assert_allclose(norms, torch.stack([gw, gb], dim=1).numpy(), rtol=1e-9)
    assert target.stats.nfe == 3 * len(ts)
    assert target.param_grad_names() == ["w", "b"]


def test_paper_timesteps_and_validation():
    assert paper_timesteps(1000, 10) == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert paper_timesteps(500, 4) == [124, 249, 374, 499]
    target = GradToyTarget()
    assert make_attack(GSA, target).describe()["timesteps"] == paper_timesteps(1000, 10)
    for params, word in (({"ts": [1000]}, "ts=1000"), ({"ts": []}, "ts is empty"), ({"timesteps": 0}, "timesteps=0"),
                         ({"l2": 0.0}, "l2=0.0")):
        with pytest.raises(ConfigError, match=word):
            make_attack(GSA, target, **params)
    bad = {"mean": [0.0], "scale": [1.0], "weights": [1.0], "bias": 0.0}
    with pytest.raises(ConfigError, match="classifier has \\[1\\] features but target 'grad-toy' has 2"):
        make_attack(GSA, target, classifier=bad)


def test_logistic_fit_separates_and_is_deterministic():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 30 + [0] * 30)
    norms = np.exp(rng.normal(size=(60, 3)) + labels[:, None] * np.array([0.0, -1.5, 0.0]))  # members: smaller layer 1
    m1, m2 = fit_logistic(norms, labels), fit_logistic(norms, labels)
    assert m1 == m2
    assert m1.weights[1] < -0.5 and abs(m1.weights[0]) < abs(m1.weights[1])
    s = logits(m1, norms)
    assert s[labels == 1].mean() > s[labels == 0].mean()
    with pytest.raises(ValueError, match="one class"):
        fit_logistic(norms[:30], labels[:30])


# ---------------------------------------------------------------------- a real diffusers U-Net
@pytest.mark.parametrize("variant", ["gsa1", "gsa2"])
def test_ddim_target_norms_equal_the_official_backward_loop(variant, tmp_path):
    """On a tiny diffusers UNet2DModel behind the ddim target: the per-parameter norms equal the
    official script's loop (forward, ``F.mse_loss``, ``backward()``, ``torch.norm(p.grad)``)."""
    from diffusers import DDPMScheduler, DDPMPipeline, UNet2DModel

    from audit_core.plugin.targets import TargetContext
    from audit_ddim.target import DDIMParams, DDIMTarget

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(tmp_path / "m", safe_serialization=True)
    target = DDIMTarget(DDIMParams(model=str(tmp_path / "m")), TargetContext(device="cpu"))
    batch = make_batch(b=2, seed=1, dtype=torch.float32, seed_key="gsa")
    ts = [9, 49, 99]
    ours = make_attack(GSA, target, variant=variant, ts=ts).features(batch)
    model = target.unet
    assert ours.shape == (2, len(list(model.parameters())))
    assert all(p.grad is None for p in model.parameters())  # torch.autograd.grad: no .grad left behind
    flags = [p.requires_grad for p in model.parameters()]  # as the target loaded them: restored after the attack
    model.requires_grad_(True)  # the official script differentiates a model in training state
    for i in range(2):  # the official loop, one image at a time
        z = seeding.randn((1, 8, 8), batch.seed_matrix(3)[3 * i : 3 * i + 3])
        x = batch.images[i : i + 1].repeat(3, 1, 1, 1)
        steps = torch.tensor(ts)
        noisy_x = target.scheduler.add_noise(x, z, steps)
        per_t = []
        rows = [list(range(3))] if variant == "gsa1" else [[0], [1], [2]]
        for r in rows:
            model.zero_grad()
            loss = torch.nn.functional.mse_loss(model(noisy_x[r], steps[r]).sample, z[r])
            loss.backward()
            per_t.append(torch.stack([p.grad.norm() for p in model.parameters()]))
        want = torch.stack(per_t).mean(dim=0).double()
        np.testing.assert_allclose(ours[i].numpy(), want.numpy(), rtol=2e-4, atol=1e-7)
        model.zero_grad(set_to_none=True)
    assert not any(flags)  # the target's U-Net is frozen; param_grad_norms left it so


# ---------------------------------------------------------------------- refusal
@pytest.mark.parametrize("module, cls", [("audit_http.target", "HTTPTarget"), ("audit_torch_callable.target", "TorchCallableTarget")])
def test_targets_without_gradients_are_refused(module, cls):
    import importlib

    target_cls = getattr(importlib.import_module(module), cls)
    with pytest.raises(AccessError, match="gradients w.r.t. the model's parameters"):
        check_access(GSA, target_cls, "gsa")


# ---------------------------------------------------------------------- through the runner
@pytest.fixture
def run_config(toy_run_config, register_plugin):
    register_plugin(GradToyPlugin(), name="grad-toy-plugin")

    def make(target="grad-toy", attacks=None, **run):
        attacks = attacks or [{"plugin": "gsa", "params": {"ts": [50, 200, 400]}},
                              {"plugin": "gsa", "name": "gsa2", "params": {"variant": "gsa2", "ts": [50, 200, 400]}}]
        inference = run.pop("inference", None)
        path = toy_run_config(attacks, target, **{"name": "gsa-test", **run})
        if inference:  # a top-level section the toy config does not write
            cfg = yaml.safe_load(path.read_text())
            path.write_text(yaml.safe_dump({**cfg, "inference": inference}, sort_keys=False))
        return path

    return make


def test_refused_before_any_query_on_a_target_without_gradients(run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", run_config(target="toy"), "--output", tmp_path / "out")
    assert code == 2, output
    assert "gsa" in output and "'toy'" in output and "gradients w.r.t. the model's parameters" in output
    assert no_traceback(output)
    assert not (tmp_path / "out").exists()


def test_run_counts_k_nfe_fits_on_calibration_rows_only_and_resumes(run_config, audit_cli, tmp_path):
    from audit_core.run.store import RunStore

    cfg = run_config(inference={"calibration_fraction": 0.5})
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 0, output
    res = json.loads((out / "results.json").read_text())["attacks"]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    for name in ("gsa", "gsa2"):
        e = res[name]
        assert e["nfe_per_image"] == 3 and e["spent"]["nfe"] == 24 and e["features"] == 2
        cal = [r["image_id"] for r in rows if r["attack"] == name and r["split"] == "calibration"]
        assert 0 < len(cal) < 8 and e["n_members"] + e["n_nonmembers"] == 8 - len(cal)
        # the classifier is exactly the fit on the calibration images' stored features
        store = RunStore(out)
        feats = store.features(name)
        labels = {r["image_id"]: int(r["label"] == "member") for r in rows if r["attack"] == name}
        want = fit_logistic(np.array([feats[i] for i in cal]), np.array([labels[i] for i in cal]))
        store.close()
        assert e["scorer"]["calibrated_params"]["classifier"] == want.model_dump()
        held = {r["image_id"]: float(r["score"]) for r in rows if r["attack"] == name and r["split"] != "calibration"}
        np.testing.assert_allclose([held[i] for i in held], logits(want, np.array([feats[i] for i in held])), rtol=1e-6)
    # resume after losing the held-out scores: the same classifier and scores
    again = tmp_path / "resumed"
    shutil.copytree(out, again)
    cal = [r["image_id"] for r in rows if r["split"] == "calibration"]
    db = sqlite3.connect(again / "state.sqlite")
    db.execute(f"DELETE FROM scores WHERE image_id NOT IN ({','.join('?' * len(cal))})", cal)
    db.execute("DELETE FROM meta WHERE key = 'finished'")
    db.commit()
    db.close()
    code, output = audit_cli("run", cfg, "--output", again, "--resume", "--set", "run.batch_size=2")
    assert code == 0, output
    assert (again / "scores.csv").read_text() == (out / "scores.csv").read_text()


def test_a_given_classifier_needs_no_calibration(run_config, audit_cli, tmp_path):
    clf = {"mean": [0.0, 0.0], "scale": [1.0, 1.0], "weights": [-1.0, 0.5], "bias": 0.25}
    cfg = run_config(attacks=[{"plugin": "gsa", "params": {"ts": [100], "classifier": clf}}])
    code, output = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, output
    e = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]["gsa"]
    assert e["n_members"] + e["n_nonmembers"] == 8 and e["nfe_per_image"] == 1
