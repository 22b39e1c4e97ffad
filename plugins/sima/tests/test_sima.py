"""Tests of the sima plugin: the score equals -sum|eps(x, t)|^p computed by hand, 1 NFE, grey-box
access enforced, t: auto chosen on the calibration split only (permuting the held-out labels
changes nothing), batching and resumption change no score, ensemble and copyright mode use it."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from audit_sima import SimA
from audit_sima.attack import OFFICIAL_SWEEP, best_column

from audit_core.base.errors import ConfigError
from audit_core.testing import FakeLatentTarget as FakeLatent
from audit_core.testing import (
    ToyParams,
    ToyTarget,
    assert_batch_size_independent,
    fake_latent_eps,
    make_attack,
    make_batch,
    no_traceback,
)

T = 1000

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: more threads only contend


# ---------------------------------------------------------------------- the formula, by hand
@pytest.mark.parametrize("scale, shift, t, p", [(0.5, 0.0, 100, 4.0), (-0.3, 0.8, 0, 4.0), (1.1, 0.2, 999, 2.0), (0.7, -0.4, 37, 1.5)])
def test_score_by_hand_on_linear_toy(scale, shift, t, p):
    """eps(x, t) = s x + h t/T on the clean image: score = -sum |s x + h t/T|^p."""
    target = ToyTarget(ToyParams(scale=scale, shift=shift))
    batch = make_batch(b=4, seed=1)
    out = make_attack(SimA, target, t=t, p=p).score(batch)
    e = scale * batch.images.numpy() + shift * t / T
    np.testing.assert_allclose(out.scores.numpy(), -(np.abs(e) ** p).reshape(4, -1).sum(1), rtol=1e-9)
    np.testing.assert_allclose(out.residuals.numpy(), np.abs(e), rtol=1e-12)
    assert target.eps_calls == [(4, t)]  # one forward pass of the batch: 1 NFE per image


def test_latent_target_model_space_and_captions():
    caps = ["a red cat", None, "xy"]
    target = FakeLatent()
    batch = make_batch(captions=caps, seed=2)
    out = make_attack(SimA, target, t=250).score(batch)
    z0 = 0.5 * batch.images.numpy() + 0.1
    e = fake_latent_eps(z0, 250, caps)
    np.testing.assert_allclose(out.scores.numpy(), -(np.abs(e) ** 4).reshape(3, -1).sum(1), rtol=1e-9)
    assert target.calls == [(3, 250, caps)] and target.encoded == 3 and target.stats.nfe == 3


def test_auto_scores_every_candidate_of_a_calibration_batch():
    target = ToyTarget(ToyParams(scale=0.6, shift=0.5))
    batch = make_batch(b=2, seed=3)
    out = make_attack(SimA, target, t="auto", candidates=[0, 40, 500]).score(batch)
    x = batch.images.numpy()
    want = np.stack([-(np.abs(0.6 * x + 0.5 * c / T) ** 4).reshape(2, -1).sum(1) for c in (0, 40, 500)], axis=1)
    np.testing.assert_allclose(out.features.numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(out.scores.numpy(), want[:, 0], rtol=1e-12)  # the first candidate's
    assert target.eps_calls == [(2, 0), (2, 40), (2, 500)]


def test_calibrated_t_is_the_candidate_with_the_best_auc():
    a = make_attack(SimA, ToyTarget(ToyParams()), t="auto", candidates=[10, 20, 30])
    labels = np.array([1, 1, 0, 0])
    features = np.array([[0.0, 5.0, 1.0], [1.0, 4.0, 0.0], [2.0, 1.0, 3.0], [3.0, 0.0, 2.0]])  # AUC 0, 1, 0.25
    assert a.calibrated_params(features[:, 0], labels, features=features) == {"t": 20}
    assert best_column(np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([1, 0])) == 0  # ties: the first
    assert a.calibrated_params(features[:, 0], labels) == {"t": 10}  # no features: the first candidate


@pytest.mark.parametrize(
    "params, word",
    [
        ({"t": 1000}, "t step 1000 must satisfy 0 <= t < T=1000"),
        ({"t": -1}, "t=-1 must not be negative"),
        ({"p": 0.0}, "p=0.0"),
        ({"p": float("inf")}, "p=inf"),
        ({"t": "auto", "candidates": []}, "at least one step"),
        ({"t": "auto", "candidates": [10, 10]}, "lists a step twice"),
        ({"t": "auto", "candidates": [0, 1000]}, "candidates step 1000"),
    ],
)
def test_check_rejects_bad_params_naming_them(params, word):
    with pytest.raises(ConfigError, match=word.replace("(", r"\(")):
        make_attack(SimA, ToyTarget(ToyParams()), **params)


def test_paper_preset_is_the_official_sweep_chosen_on_calibration():
    assert SimA.presets["paper"] == {"t": "auto", "candidates": list(range(0, 201, 10)), "p": 4.0}
    assert OFFICIAL_SWEEP[0] == 0 and OFFICIAL_SWEEP[-1] == 200 and len(OFFICIAL_SWEEP) == 21


# ---------------------------------------------------------------------- through `audit run`
def results(out):
    return json.loads((out / "results.json").read_text())


def test_audit_run_one_nfe_deterministic_and_batch_size_independent(toy_run_config, audit_cli, tmp_path):
    cfg = toy_run_config([{"plugin": "sima"}, {"plugin": "sima", "name": "sima-t0", "params": {"t": 0, "p": 2.0}}])
    rows = assert_batch_size_independent(audit_cli, cfg, tmp_path)
    e = results(tmp_path / "bs1-0")["attacks"]
    assert e["sima"]["nfe_per_image"] == 1 and e["sima"]["spent"]["nfe"] == 8
    assert e["sima"]["params"] == {"preset": None, "t": 100, "p": 4.0, "candidates": OFFICIAL_SWEEP}
    assert e["sima-t0"]["nfe_per_image"] == 1
    # no randomness: another run seed gives the same scores
    assert audit_cli("run", cfg, "--output", tmp_path / "s4", "--set", "run.seed=4")[0] == 0
    other = list(csv.DictReader((tmp_path / "s4" / "scores.csv").open()))
    assert [r["score"] for r in rows] == [r["score"] for r in other]


def test_refused_on_variation_only_target(toy_run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", toy_run_config([{"plugin": "sima"}], target="toy-variation"), "--output", tmp_path / "out")
    assert code == 2, output
    assert "sima" in output and "toy-variation" in output and "noise prediction" in output
    assert no_traceback(output) and not (tmp_path / "out").exists()


def test_bad_param_is_exit_2_naming_it(toy_run_config, audit_cli, tmp_path):
    code, output = audit_cli("run", toy_run_config([{"plugin": "sima", "params": {"t": 1000}}]), "--output", tmp_path / "o")
    assert code == 2 and "t step 1000" in output and no_traceback(output)
    code, output = audit_cli("run", toy_run_config([{"plugin": "sima", "params": {"tt": 5}}]), "--output", tmp_path / "o2")
    assert code == 2 and "tt" in output and no_traceback(output)


# ---------------------------------------------------------------------- t: auto through the runner
CANDIDATES = [0, 100, 200, 400, 600, 800]


@pytest.fixture
def auto_run(toy_plugin, image_folder, write_config):
    """10 + 10 images on a toy target whose eps depends on t (shift), t: auto; 40 % calibration."""
    members = image_folder("members", n=10, seed=1)
    nonmembers = image_folder("nonmembers", n=10, seed=2)

    def make(**over):
        return write_config({
            "run": {"name": "auto", "seed": 5, "device": "cpu", "batch_size": 4},
            "target": {"plugin": "toy", "scale": 0.5, "shift": 1.5},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": [{"plugin": "sima", "params": {"t": "auto", "candidates": CANDIDATES}}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 10},
            "inference": {"calibration_fraction": 0.4},
            **over,
        })

    make.members, make.nonmembers = members, nonmembers
    return make


def chosen_t(out) -> int:
    return results(out)["attacks"]["sima"]["scorer"]["calibrated_params"]["t"]


def split_of(out) -> dict[str, str]:
    return {r["image_id"]: r["split"] for r in csv.DictReader((out / "scores.csv").open())}


def toy_scores(paths, t, scale=0.5, shift=1.5):
    from PIL import Image

    x = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 127.5 - 1 for p in paths])
    return -(np.abs(scale * x + shift * t / T) ** 4).reshape(len(paths), -1).sum(1)


def test_auto_picks_t_on_the_calibration_images_and_evaluates_the_others(auto_run, audit_cli, tmp_path):
    out = tmp_path / "run"
    code, output = audit_cli("run", auto_run(), "--output", out)
    assert code == 0, output
    e = results(out)["attacks"]["sima"]
    split = split_of(out)
    cal = sorted(i for i, s in split.items() if s == "calibration")
    assert len(cal) == 8 and e["n_members"] + e["n_nonmembers"] == 12  # metrics on the held-out 60 %
    # the choice by hand: the best AUC among the candidates on the calibration images only
    paths = [(auto_run.members if i.startswith("members/") else auto_run.nonmembers) / i.split("/", 1)[1] for i in cal]
    labels = np.array([1 if i.startswith("members/") else 0 for i in cal])
    feats = np.stack([toy_scores(paths, c) for c in CANDIDATES], axis=1)
    assert chosen_t(out) == CANDIDATES[best_column(feats, labels)]
    # calibration images: every candidate (6 NFE); the others: the chosen step (1 NFE)
    rows = {r["image_id"]: r for r in csv.DictReader((out / "scores.csv").open())}
    held = sorted(i for i, s in split.items() if s == "evaluation")
    hpaths = [(auto_run.members if i.startswith("members/") else auto_run.nonmembers) / i.split("/", 1)[1] for i in held]
    np.testing.assert_allclose([float(rows[i]["score"]) for i in held], toy_scores(hpaths, chosen_t(out)), rtol=1e-5)
    assert e["spent"]["nfe"] == 8 * len(CANDIDATES) + 12


def _swap(a, b):
    tmp = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(tmp)


def test_label_leak_guard_permuting_held_out_labels_changes_nothing_chosen(auto_run, audit_cli, tmp_path):
    """Swapping the pictures of held-out members and non-members permutes the held-out labels
    (ids, record order and so the seeded split stay): the chosen t must not move. Swapping the
    calibration images' pictures reverses the calibration labels, and the choice does move."""
    base = tmp_path / "base"
    assert audit_cli("run", auto_run(), "--output", base)[0] == 0
    split, t0 = split_of(base), chosen_t(base)

    def files(group, which):
        folder = auto_run.members if group == "members" else auto_run.nonmembers
        return [folder / i.split("/", 1)[1] for i, s in sorted(split.items()) if s == which and i.startswith(group + "/")]

    held_m, held_n = files("members", "evaluation"), files("nonmembers", "evaluation")
    for a, b in zip(held_m, held_n):
        _swap(a, b)
    permuted = tmp_path / "permuted"
    assert audit_cli("run", auto_run(), "--output", permuted)[0] == 0
    assert split_of(permuted) == split and chosen_t(permuted) == t0
    # the held-out scores did change (the same pictures, now under the other label)
    a, b = (list(csv.DictReader((d / "scores.csv").open())) for d in (base, permuted))
    assert [r["score"] for r in a] != [r["score"] for r in b]

    for a, b in zip(files("members", "calibration"), files("nonmembers", "calibration")):
        _swap(a, b)
    reversed_ = tmp_path / "reversed"
    assert audit_cli("run", auto_run(), "--output", reversed_)[0] == 0
    assert chosen_t(reversed_) != t0


def test_auto_run_is_batch_size_independent_and_resumes_to_the_same_scores(auto_run, audit_cli, tmp_path):
    cfg = auto_run()
    rows = assert_batch_size_independent(audit_cli, cfg, tmp_path / "bs", sizes=(1, 7))
    first = tmp_path / "bs" / "bs1-0"
    # resume after losing the held-out images' scores: t is re-derived from the stored features
    again = tmp_path / "resumed"
    shutil.copytree(first, again)
    cal = [r["image_id"] for r in rows if r["split"] == "calibration"]
    db = sqlite3.connect(again / "state.sqlite")
    db.execute(f"DELETE FROM scores WHERE image_id NOT IN ({','.join('?' * len(cal))})", cal)
    assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == len(cal)
    db.execute("DELETE FROM meta WHERE key = 'finished'")
    db.commit()
    db.close()
    code, output = audit_cli("run", cfg, "--output", again, "--resume", "--set", "run.batch_size=3")
    assert code == 0, output
    assert (again / "scores.csv").read_text() == (first / "scores.csv").read_text()


# ---------------------------------------------------------------------- ensemble and copyright mode
def test_ensemble_and_copyright_mode_use_it(toy_plugin, image_folder, write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_ensemble")
    cfg = write_config({
        "run": {"name": "was-my-set-used", "seed": 3, "device": "cpu", "batch_size": 8},
        "target": {"plugin": "toy", "shift": 1.0},
        "data": {"suspects": str(image_folder("sus", n=10, seed=1)), "reference": str(image_folder("ref", n=20, seed=2))},
        "attacks": [
            {"plugin": "sima", "params": {"t": 50}},
            {"plugin": "sima", "name": "sima-600", "params": {"t": 600, "p": 2.0}},
            {"plugin": "ensemble", "name": "ens", "params": {"of": ["sima", "sima-600"]}},
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
    si = r["set_inference"]
    for name in ("sima", "sima-600", "ens"):
        assert 0 < si[name]["p_value"] <= 1 and si[name]["n_suspects"] > 0
    assert r["attacks"]["ens"]["plugin"] == "ensemble" and r["attacks"]["sima"]["nfe_per_image"] == 1
    assert torch.isfinite(torch.tensor([float(x["score"]) for x in csv.DictReader((out / "scores.csv").open())])).all()
