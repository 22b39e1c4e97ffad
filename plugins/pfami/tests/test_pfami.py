"""Tests of the pfami plugin: the score equals the probabilistic fluctuation computed by hand (numpy
crop-and-resize, the documented per-image noise), NFE = (perturbations + 1) * len(ts) with one
forward pass per step, grey-box access enforced, batching and resumption change no score, and the
ensemble and copyright mode use it."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from audit_pfami import PFAMI
from audit_pfami.attack import PAPER_TS, center_crop_resize

from audit_core.base.errors import ConfigError
from audit_core.base.seeding import derive_seed
from audit_core.testing import FakeLatentTarget as FakeLatent
from audit_core.testing import (
    ToyParams,
    ToyTarget,
    abar_linear,
    abar_scaled,
    assert_batch_size_independent,
    fake_latent_eps,
    make_attack,
    no_traceback,
)
from audit_core.testing import make_batch as _make_batch

T = 1000
RUN_SEED, KEY = 7, "pfami"

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: more threads only contend


def make_batch(b=3, seed=0, captions=None):
    return _make_batch(b, seed, captions, run_seed=RUN_SEED, seed_key=KEY)


def attack(target, **params):
    return make_attack(PFAMI, target, name=KEY, run_seed=RUN_SEED, **params)


def noise(image_id: str, draw: int, shape=(1, 8, 8)) -> np.ndarray:
    """The documented noise: N(0, I) from a CPU generator seeded with derive_seed(run seed, key, id, draw)."""
    g = torch.Generator().manual_seed(derive_seed(RUN_SEED, KEY, image_id, draw))
    return torch.randn(shape, generator=g, dtype=torch.float32).double().numpy()


def resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [C, h, w] to [C, size, size] with half-pixel centres, written out."""
    c, h, w = img.shape

    def taps(n_in):
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, wy = taps(h)
    x0, x1, wx = taps(w)
    out = np.empty((c, size, size))
    for i in range(size):
        for j in range(size):
            top = img[:, y0[i], x0[j]] * (1 - wx[j]) + img[:, y0[i], x1[j]] * wx[j]
            bot = img[:, y1[i], x0[j]] * (1 - wx[j]) + img[:, y1[i], x1[j]] * wx[j]
            out[:, i, j] = top * (1 - wy[i]) + bot * wy[i]
    return out


def crop(img: np.ndarray, s: float) -> np.ndarray:
    H = img.shape[-1]
    h = int(H * s)
    o = (H - h) // 2
    return resize_bilinear(img[:, o : o + h, o : o + h], H)


def by_hand(batch, ts, strengths, eps, abar, encode=lambda x: x, statistic="difference"):
    out = []
    for i, image_id in enumerate(batch.ids):
        x = batch.images[i].numpy()
        versions = [x] + [crop(x, s) for s in strengths]
        L = np.empty((len(versions), len(ts)))
        for v, xv in enumerate(versions):
            for j, t in enumerate(ts):
                z = noise(image_id, v * len(ts) + j)
                a = abar(t)
                x_t = math.sqrt(a) * encode(xv) + math.sqrt(1 - a) * z
                L[v, j] = ((eps(x_t, t, i) - z) ** 2).mean()
        if statistic == "difference":
            out.append(L[1:].mean() - L[0].mean())
        else:
            out.append(((L[1:] - L[0]) / L[0]).mean())
    return np.array(out)


# ---------------------------------------------------------------------- the formula, by hand
def test_crop_resize_equals_the_written_out_bilinear():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    for s in (0.95, 0.8, 0.7, 0.5):
        got = center_crop_resize(x, s).numpy()
        for i in range(2):
            np.testing.assert_allclose(got[i], crop(x[i].numpy(), s), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(center_crop_resize(x, 1.0).numpy(), x.numpy())  # no crop: the image


@pytest.mark.parametrize("statistic", ["difference", "relative"])
@pytest.mark.parametrize("scale, shift", [(0.5, 0.0), (-0.3, 0.8)])
def test_score_by_hand_on_linear_toy(scale, shift, statistic):
    target = ToyTarget(ToyParams(scale=scale, shift=shift))
    batch = make_batch()
    ts, strengths = [0, 150, 450], [0.9, 0.8, 0.7]
    out = attack(target, ts=ts, perturbations=3, crop=(0.9, 0.7), statistic=statistic).score(batch)
    want = by_hand(batch, ts, strengths, lambda x_t, t, i: scale * x_t + shift * t / T, abar_linear, statistic=statistic)
    np.testing.assert_allclose(out.scores.numpy(), want, rtol=1e-9)
    # one forward pass per step, all 4 versions of the 3 images in it
    assert target.eps_calls == [(12, 0), (12, 150), (12, 450)] and target.stats.nfe == 36


def test_latent_target_encodes_every_version_once_with_its_caption():
    caps = ["a red cat", None, "xy"]
    target = FakeLatent()
    batch = make_batch(captions=caps, seed=4)
    ts = [10, 300]
    out = attack(target, ts=ts, perturbations=2, crop=(0.9, 0.75)).score(batch)
    want = by_hand(
        batch, ts, [0.9, 0.75], lambda x_t, t, i: fake_latent_eps(x_t[None], t, [caps[i]])[0], abar_scaled,
        encode=lambda x: 0.5 * x + 0.1,
    )
    np.testing.assert_allclose(out.scores.numpy(), want, rtol=1e-9)
    rows = [c for c in caps for _ in range(3)]
    assert target.calls == [(9, 10, rows), (9, 300, rows)] and target.encoded == 9


def test_defaults_are_the_papers_and_cost_110_nfe():
    a = attack(ToyTarget(ToyParams()))
    p = a.params
    assert p.ts == PAPER_TS == list(range(0, 451, 50)) and p.perturbations == 10 and p.crop == (0.95, 0.70)
    assert a.nfe_per_image() == 110 and a.describe()["expected_nfe_per_image"] == 110
    np.testing.assert_allclose(a.strengths(), np.linspace(0.95, 0.70, 10), rtol=1e-12)
    assert PFAMI.presets["paper"]["ts"] == PAPER_TS


def test_noise_is_per_image_not_per_batch_position():
    target = ToyTarget(ToyParams(scale=0.4, shift=0.2))
    batch = make_batch(b=3, seed=6)
    from audit_core.plugin.attacks import Batch

    flipped = Batch(images=batch.images.flip(0), ids=batch.ids[::-1], captions=batch.captions, run_seed=RUN_SEED, seed_key=KEY)
    a = attack(target, ts=[0, 200], perturbations=2)
    np.testing.assert_allclose(a.score(batch).scores.numpy(), a.score(flipped).scores.flip(0).numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "params, word",
    [
        ({"ts": []}, "at least one step"),
        ({"ts": [0, 50, 50]}, "lists a step twice"),
        ({"ts": [0, 1000]}, "ts step 1000 must satisfy 0 <= t < T=1000"),
        ({"ts": [-5]}, "ts=-5 must not be negative"),
        ({"perturbations": 0}, "perturbations=0"),
        ({"crop": (0.95, 0.0)}, "crop strength 0.0"),
        ({"crop": (1.2, 0.7)}, "crop strength 1.2"),
        ({"crop": (0.95, 0.1)}, "crop strength 0.1"),  # int(8 * 0.1) = 0 pixels
    ],
)
def test_check_rejects_bad_params_naming_them(params, word):
    with pytest.raises(ConfigError, match=word):
        attack(ToyTarget(ToyParams()), **params)


# ---------------------------------------------------------------------- through `audit run`
SMALL = {"ts": [0, 100, 300], "perturbations": 3}


def results(out):
    return json.loads((out / "results.json").read_text())


def test_audit_run_reports_exact_nfe_and_is_batch_size_independent(toy_run_config, audit_cli, tmp_path):
    cfg = toy_run_config([{"plugin": "pfami", "params": SMALL}, {"plugin": "pfami", "name": "pfami-rel", "params": {**SMALL, "statistic": "relative"}}])
    rows = assert_batch_size_independent(audit_cli, cfg, tmp_path)
    e = results(tmp_path / "bs1-0")["attacks"]
    assert e["pfami"]["nfe_per_image"] == 12 and e["pfami"]["spent"]["nfe"] == 8 * 12
    assert e["pfami-rel"]["nfe_per_image"] == 12
    assert "nfe_warning" not in json.dumps(e)
    # seeded: another run seed draws other noise
    assert audit_cli("run", cfg, "--output", tmp_path / "s4", "--set", "run.seed=4")[0] == 0
    other = list(csv.DictReader((tmp_path / "s4" / "scores.csv").open()))
    assert [r["score"] for r in rows] != [r["score"] for r in other]


def test_resume_after_losing_scores_gives_the_same_scores(toy_run_config, audit_cli, tmp_path):
    cfg = toy_run_config([{"plugin": "pfami", "params": SMALL}])
    first = tmp_path / "first"
    assert audit_cli("run", cfg, "--output", first)[0] == 0
    again = tmp_path / "again"
    shutil.copytree(first, again)
    db = sqlite3.connect(again / "state.sqlite")
    kept = [r[0] for r in db.execute("SELECT image_id FROM scores ORDER BY image_id LIMIT 3")]
    db.execute(f"DELETE FROM scores WHERE image_id NOT IN ({','.join('?' * len(kept))})", kept)
    db.execute("DELETE FROM meta WHERE key = 'finished'")
    db.commit()
    db.close()
    code, output = audit_cli("run", cfg, "--output", again, "--resume", "--set", "run.batch_size=2")
    assert code == 0, output
    assert (again / "scores.csv").read_text() == (first / "scores.csv").read_text()
    assert results(again)["attacks"]["pfami"]["nfe_per_image"] == 12


def test_refused_on_variation_only_target(toy_run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", toy_run_config([{"plugin": "pfami"}], target="toy-variation"), "--output", tmp_path / "out")
    assert code == 2, output
    assert "pfami" in output and "toy-variation" in output and "noise prediction" in output
    assert no_traceback(output) and not (tmp_path / "out").exists()


def test_bad_param_is_exit_2_naming_it(toy_run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", toy_run_config([{"plugin": "pfami", "params": {"perturbations": 0}}]), "--output", tmp_path / "o")
    assert code == 2 and "perturbations=0" in output and no_traceback(output)
    assert not (tmp_path / "o").exists()


def test_ensemble_and_copyright_mode_use_it(toy_plugin, image_folder, write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_ensemble")
    cfg = write_config({
        "run": {"name": "was-my-set-used", "seed": 3, "device": "cpu", "batch_size": 8},
        "target": {"plugin": "toy", "shift": 1.0},
        "data": {"suspects": str(image_folder("sus", n=10, seed=1)), "reference": str(image_folder("ref", n=20, seed=2))},
        "attacks": [
            {"plugin": "pfami", "params": SMALL},
            {"plugin": "pfami", "name": "pfami-rel", "params": {**SMALL, "statistic": "relative"}},
            {"plugin": "ensemble", "name": "ens", "params": {"of": ["pfami", "pfami-rel"], "combiner": "rank-mean"}},
        ],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
        "inference": {"alpha": 0.05},
    })
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 0, output
    r = results(out)
    assert r["run"]["mode"] == "copyright"
    for name in ("pfami", "pfami-rel", "ens"):
        assert 0 < r["set_inference"][name]["p_value"] <= 1
    assert r["attacks"]["ens"]["plugin"] == "ensemble"
