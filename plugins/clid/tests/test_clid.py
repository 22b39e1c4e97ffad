"""Tests of the clid plugin: the caption perturbations; the features (conditional loss and its
discrepancies) equal the formula computed by hand on a caption-dependent fake latent target, and
the official code's per-image loop on the tiny Stable Diffusion; K (1 + m) NFEs per image;
refusal (exit 2, before any query) on targets that do not take captions as prompts; alpha and the
scaler fitted on the calibration rows only; resume."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sqlite3

import numpy as np
import pytest
import torch
import yaml
from audit_clid import CLiD
from audit_clid.attack import ALPHAS, auc, combined, robust_scale, statistics
from audit_clid.captions import END_OF_TEXT, perturb, spec_problem

from audit_core import hookimpl, seeding
from audit_core.base.errors import ConfigError
from audit_core.plugin.targets import NOISE, TEXT
from audit_core.testing import FakeLatentTarget, make_attack, make_batch, no_traceback
from audit_core.testing.toys import abar_scaled, fake_latent_eps

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: more threads only contend


class TextLatentTarget(FakeLatentTarget):
    """The fake latent target, declared text-conditional (its eps depends on each row's caption)."""

    name = "fake-text"
    capabilities = frozenset({NOISE, TEXT})


class TextPlugin:
    @hookimpl
    def register_targets(self, register):
        register(TextLatentTarget)
        register(FakeLatentTarget)


# ---------------------------------------------------------------------- captions
def test_perturbations():
    c = "a red cat on a mat"  # 18 characters: thirds cut at 6 and 12
    assert [perturb(c, f"third-{i}") for i in (1, 2, 3)] == ["a red ", "cat on", " a mat"]
    assert perturb(c, "null") == "" and perturb(None, "third-2") == ""
    words = c.split()  # 6 words: int(R * 6 - 0.01) + 1 clipped
    for rate, count in ((0.3, 2), (0.5, 3), (0.7, 5), (1.0, 6)):
        out = perturb(c, f"clip-{rate}", seed=7).split()
        assert len(out) == 6 and out.count(END_OF_TEXT) == count
        assert all(o == w for o, w in zip(out, words) if o != END_OF_TEXT)
    assert perturb(c, "clip-0.5", seed=7) == perturb(c, "clip-0.5", seed=7)  # seeded
    assert len({perturb(c, "clip-0.5", seed=s) for s in range(10)}) > 3  # by the seed
    for bad in ("third-4", "clip-0", "clip-1.5", "drop-0.3", ""):
        assert spec_problem(bad) is not None
    assert spec_problem("clip-.25") is None


# ---------------------------------------------------------------------- the features, by hand
def test_features_and_score_equal_the_formula_on_a_caption_dependent_target():
    caps = ["a red cat on a mat", "dog", None]
    ts, specs = [100, 450], ["third-1", "null", "clip-0.5"]
    target = TextLatentTarget()
    batch = make_batch(b=3, seed=2, captions=caps, seed_key="clid")
    attack = make_attack(CLiD, target, ts=ts, perturbations=specs, alpha=0.3,
                         scaler={"center": [0.1, -0.2], "scale": [2.0, 0.5]})
    out = attack.score(batch)
    z = 0.5 * batch.images.numpy() + 0.1
    noise = seeding.randn(z.shape[1:], batch.seed_matrix(2), dtype=torch.float64).numpy().reshape(3, 2, *z.shape[1:])
    want = np.zeros((3, 4))
    for i, cap in enumerate(caps):
        variants = [cap or "", perturb(cap, "third-1"), "", perturb(cap, "clip-0.5", batch.seeds(2 + 2)[i])]
        for v, c in enumerate(variants):
            for j, t in enumerate(ts):
                a = abar_scaled(t)
                x_t = math.sqrt(a) * z[i : i + 1] + math.sqrt(1 - a) * noise[i, j][None]
                want[i, v] += ((fake_latent_eps(x_t, t, [c]) - noise[i, j][None]) ** 2).mean() / len(ts)
    want[:, 1:] -= want[:, :1]
    np.testing.assert_allclose(out.features.numpy(), want, rtol=1e-9)
    stat = np.stack([want[:, 0], -want[:, 1:].mean(axis=1)], axis=1)
    score = -(0.7 * (stat[:, 0] - 0.1) / 2.0 + 0.3 * (stat[:, 1] + 0.2) / 0.5)
    np.testing.assert_allclose(out.scores.numpy(), score, rtol=1e-9)
    assert target.stats.nfe == 3 * 2 * 4 and [c[0] for c in target.calls] == [12, 12]  # one call per timestep
    assert attack.expected_nfe_per_image == 8


def test_alpha_and_scaler_from_the_calibration_split():
    rng = np.random.default_rng(1)
    labels = np.array([1] * 20 + [0] * 20)
    feats = np.column_stack([rng.normal(size=40), rng.normal(size=(40, 4)) + labels[:, None] * 0.8])  # only d' separates
    attack = make_attack(CLiD, TextLatentTarget())
    assert attack.needs_calibration()
    cp = attack.calibrated_params(np.zeros(40), labels, features=feats)
    scaler = robust_scale(statistics(feats))
    assert cp["scaler"] == scaler.model_dump()
    aucs = [auc(combined(feats, a, scaler), labels) for a in ALPHAS]
    assert cp["alpha"] == ALPHAS[int(np.argmax(aucs))] and cp["alpha"] >= 0.5
    assert auc(np.array([3.0, 1.0, 2.0, 2.0]), np.array([1, 0, 1, 0])) == pytest.approx(0.875)
    for alpha in (0.0, 1.0):  # the plain loss / the discrepancy alone: nothing to calibrate
        assert not make_attack(CLiD, TextLatentTarget(), alpha=alpha).needs_calibration()


@pytest.mark.parametrize(
    "params, word",
    [({"ts": [1000]}, "ts=1000"), ({"ts": []}, "ts is empty"), ({"perturbations": ["third-5"]}, "third-5"),
     ({"perturbations": []}, "perturbations is empty"), ({"alpha": 1.5}, "alpha=1.5"),
     ({"scaler": {"center": [0.0, 0.0], "scale": [1.0, 1.0]}}, "give alpha too")],
)
def test_bad_params_name_themselves(params, word):
    with pytest.raises(ConfigError, match=word):
        make_attack(CLiD, TextLatentTarget(), **params)


# ---------------------------------------------------------------------- the tiny Stable Diffusion
def test_tiny_sd_features_equal_the_official_loop(tmp_path):
    """On the stable-diffusion plugin's tiny SD: ``mia_CLiD_clip.py``'s per-image computation
    (scheduler.add_noise, tokenizer at max_length, text encoder, U-Net, F.mse_loss) gives the
    same conditional loss and discrepancies, given the same latents and noises."""
    import torch.nn.functional as F

    from audit_core.plugin.targets import TargetContext
    from audit_stable_diffusion.target import SDParams, StableDiffusionTarget
    from audit_stable_diffusion.tiny import build_tiny_pipeline

    target = StableDiffusionTarget(SDParams(model=str(build_tiny_pipeline(tmp_path / "sd"))), TargetContext(device="cpu"))
    caps = ["a handwritten digit 3", "a photo of a cat"]
    g = torch.Generator().manual_seed(0)
    batch = make_batch(b=2, seed=0, captions=caps, dtype=torch.float32, seed_key="clid")
    batch.images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    ts = [485, 495, 505]
    ours = make_attack(CLiD, target, ts=ts).features(batch).numpy()
    assert target.stats.nfe == 2 * 3 * 5

    def embed(text):
        ids = target.tokenizer([text], max_length=target.tokenizer.model_max_length, padding="max_length",
                               truncation=True, return_tensors="pt").input_ids
        return target.text_encoder(ids)[0]

    with torch.no_grad():
        latents = target.encode(batch.images)
        for i, cap in enumerate(caps):
            noise = seeding.randn((4, 8, 8), batch.seed_matrix(3)[3 * i : 3 * i + 3])
            steps = torch.tensor(ts)
            x = target.scheduler.add_noise(latents[i : i + 1].expand(3, 4, 8, 8), noise, steps)
            cut = [cap[: int(len(cap) / 3)], cap[int(len(cap) / 3) : int(2 * len(cap) / 3)], cap[int(2 * len(cap) / 3) :], ""]
            loss0 = F.mse_loss(target.unet(x, steps, embed(cap).expand(3, -1, -1)).sample, noise)
            want = [float(loss0)] + [
                float(F.mse_loss(target.unet(x, steps, embed(c).expand(3, -1, -1)).sample, noise)) - float(loss0) for c in cut
            ]
            np.testing.assert_allclose(ours[i], want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- through the runner
@pytest.fixture
def run_config(toy_run_config, register_plugin):
    register_plugin(TextPlugin(), name="text-plugin")

    def make(target="fake-text", attacks=None, **run):
        attacks = attacks or [{"plugin": "clid", "params": {"ts": [100, 300], "perturbations": ["null", "clip-0.5"]}}]
        inference = run.pop("inference", None)
        path = toy_run_config(attacks, target, **{"name": "clid-test", **run})
        if inference:  # a top-level section the toy config does not write
            cfg = yaml.safe_load(path.read_text())
            path.write_text(yaml.safe_dump({**cfg, "inference": inference}, sort_keys=False))
        return path

    return make


@pytest.mark.parametrize("target", ["toy", "fake-latent"])
def test_refused_before_any_query_on_targets_without_text_prompts(run_config, audit_cli, tmp_path, target):
    code, output = audit_cli("run", run_config(target=target), "--output", tmp_path / "out")
    assert code == 2, output
    assert "clid" in output and f"'{target}'" in output and "text-conditional noise prediction" in output
    assert no_traceback(output) and len(output.strip().splitlines()) <= 3
    assert not (tmp_path / "out").exists()


def test_run_counts_nfe_calibrates_on_calibration_rows_only_and_resumes(run_config, audit_cli, tmp_path):
    from audit_core.run.store import RunStore

    cfg = run_config(inference={"calibration_fraction": 0.5})
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 0, output
    e = json.loads((out / "results.json").read_text())["attacks"]["clid"]
    assert e["nfe_per_image"] == 2 * 3 and e["spent"]["nfe"] == 8 * 6
    rows = list(csv.DictReader((out / "scores.csv").open()))
    cal = [r["image_id"] for r in rows if r["split"] == "calibration"]
    assert 0 < len(cal) < 8 and e["n_members"] + e["n_nonmembers"] == 8 - len(cal)
    store = RunStore(out)
    feats = store.features("clid")
    store.close()
    labels = {r["image_id"]: int(r["label"] == "member") for r in rows}
    f_cal = np.array([feats[i] for i in cal])
    scaler = robust_scale(statistics(f_cal))
    cp = e["scorer"]["calibrated_params"]
    assert cp["scaler"] == scaler.model_dump()
    y = np.array([labels[i] for i in cal])
    assert cp["alpha"] == ALPHAS[int(np.argmax([auc(combined(f_cal, a, scaler), y) for a in ALPHAS]))]
    held = [r for r in rows if r["split"] != "calibration"]
    np.testing.assert_allclose([float(r["score"]) for r in held],
                               combined(np.array([feats[r["image_id"]] for r in held]), cp["alpha"], scaler), rtol=1e-6)
    again = tmp_path / "resumed"
    shutil.copytree(out, again)
    db = sqlite3.connect(again / "state.sqlite")
    db.execute(f"DELETE FROM scores WHERE image_id NOT IN ({','.join('?' * len(cal))})", cal)
    db.execute("DELETE FROM meta WHERE key = 'finished'")
    db.commit()
    db.close()
    code, output = audit_cli("run", cfg, "--output", again, "--resume", "--set", "run.batch_size=2")
    assert code == 0, output
    assert (again / "scores.csv").read_text() == (out / "scores.csv").read_text()


def test_fixed_alpha_zero_is_the_plain_loss_without_calibration(run_config, audit_cli, tmp_path):
    cfg = run_config(attacks=[{"plugin": "clid", "params": {"ts": [200], "perturbations": ["null"], "alpha": 0}}])
    code, output = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, output
    e = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]["clid"]
    assert e["n_members"] + e["n_nonmembers"] == 8 and e["nfe_per_image"] == 2
