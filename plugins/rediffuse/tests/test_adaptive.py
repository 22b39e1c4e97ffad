"""Tests of ReDiffuse's adaptive budget (``n: auto``): the prefix distances and the calibrated fit
by hand, the whole budget equals a fixed-n run, per-image seeds (draws equal a fixed run's, scores
and queries independent of batching), early stopping only when decisive, threshold calibration,
and param validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from audit_rediffuse.adaptive import calibrate_threshold, fit_stop_model, prefix_log_distances

from audit_core import seeding
from audit_core.plugin.attacks import Batch
from audit_core.base.errors import ConfigError

from .test_rediffuse import (  # noqa: F401  (run_cfg and rec_plugin are fixtures)
    NOISE,
    SHRINK,
    RecordingLatentTarget,
    RecordingVariationTarget,
    make_attack,
    make_batch,
    rec_plugin,
    run_cfg,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def variations(batch: Batch, image: int, draws: range) -> torch.Tensor:
    """The test target's variations of one image for the given draw indices, by hand."""
    x = batch.images[image]
    seeds = [seeding.derive_seed(0, "rediffuse", batch.ids[image], d) for d in draws]
    return SHRINK * x + NOISE * seeding.randn(x.shape, seeds)


def calibrated(batch: Batch, max_n: int) -> tuple[list[list[float]], float]:
    """A stop model and threshold fitted, as the runner would, on ``batch``'s whole-budget draws."""
    a = make_attack(RecordingVariationTarget(), n="auto", max_n=max_n)
    out = a.score(batch)
    tau = float(np.median(-out.scores.numpy()))
    return fit_stop_model(out.features.numpy()), tau


def test_prefix_distances_and_fit_by_hand():
    batch = make_batch(b=1, seed=0)
    a = make_attack(RecordingVariationTarget(), n="auto", max_n=4)
    v = variations(batch, 0, range(4))
    got = prefix_log_distances(a, batch.images[0], v)
    want = [math.log(float(((batch.images[0].double() - v[:m].double().mean(0)) ** 2).sum())) for m in range(1, 5)]
    assert got == pytest.approx(want, rel=1e-9)
    g = np.random.default_rng(0)
    u = g.normal(size=(50, 4))
    u[:, 3] = 0.5 * u[:, 1] + 2 + 0.1 * g.normal(size=50)
    model = fit_stop_model(u)
    assert len(model) == 3
    slope, icept = np.polyfit(u[:, 1], u[:, 3], 1)
    resid = u[:, 3] - (slope * u[:, 1] + icept)
    assert model[1] == pytest.approx([slope, icept, np.sqrt((resid**2).sum() / 48)], rel=1e-9)


def test_without_a_fit_every_image_gets_max_n_and_the_fixed_n_score():
    batch = make_batch(b=4, seed=1)
    fixed = make_attack(RecordingVariationTarget(), n=6).score(batch)
    out = make_attack(RecordingVariationTarget(), n="auto", max_n=6, min_n=2).score(batch)
    torch.testing.assert_close(out.scores.float(), fixed.scores.float(), rtol=1e-6, atol=1e-6)
    assert out.queries.tolist() == [6, 6, 6, 6]
    torch.testing.assert_close(out.reconstructions, fixed.reconstructions, rtol=1e-6, atol=1e-6)
    assert out.features.shape == (4, 6)  # the calibration features: log d after every prefix
    assert out.features[:, -1].numpy() == pytest.approx(np.log(-fixed.scores.double().numpy()), rel=1e-5)


def test_stops_early_only_when_decisive_and_draws_are_a_fixed_runs():
    model, tau = calibrated(make_batch(b=12, seed=5), 10)
    batch = make_batch(b=6, seed=2)
    full = make_attack(RecordingVariationTarget(), n=10).score(batch)
    target = RecordingVariationTarget()
    z = 1.0
    a = make_attack(target, n="auto", max_n=10, min_n=1, stop_z=z, stop_threshold=tau, stop_model=model)
    out = a.score(batch)
    assert out.features is None
    spent = out.queries.numpy()
    assert spent.min() < 10 and (spent >= 1).all()
    assert sum(c["rows"] for c in target.calls) == spent.sum()  # one row per draw, nothing wasted
    for i in range(6):
        m = int(spent[i])
        v = variations(batch, i, range(m))
        u = prefix_log_distances(a, batch.images[i], v)
        if m < 10:  # stopped: decisive at m, and not before
            at, bt, st = model[m - 1]
            u_hat = at * u[-1] + bt
            assert abs(u_hat - math.log(tau)) > z * st and out.scores[i].item() == pytest.approx(-math.exp(u_hat), rel=1e-9)
            for j in range(1, m):
                aj, bj, sj = model[j - 1]
                assert abs(aj * u[j - 1] + bj - math.log(tau)) <= z * sj
        else:
            assert out.scores[i].item() == pytest.approx(full.scores[i].item(), rel=1e-5)
    # every call after the first asks for draw m of the undecided images, with that draw's seed
    seeds = [s for c in target.calls for s in c["seeds"]]
    want = {seeding.derive_seed(0, "rediffuse", batch.ids[i], d) for i in range(6) for d in range(int(spent[i]))}
    assert sorted(seeds) == sorted(want)


def test_scores_and_queries_do_not_depend_on_batching():
    model, tau = calibrated(make_batch(b=12, seed=5), 8)
    big = make_batch(b=6, seed=3)
    a = make_attack(RecordingVariationTarget(), n="auto", max_n=8, stop_z=1.0, stop_threshold=tau, stop_model=model)
    whole = a.score(big)
    assert whole.queries.min() < 8  # some image stopped early, so batching could have mattered
    parts = [
        a.score(Batch(images=big.images[i : i + j], ids=big.ids[i : i + j], captions=[None] * j, seed_key="rediffuse"))
        for i, j in ((0, 1), (1, 2), (3, 3))
    ]
    torch.testing.assert_close(whole.scores, torch.cat([p.scores for p in parts]), rtol=1e-6, atol=1e-7)
    assert whole.queries.tolist() == torch.cat([p.queries for p in parts]).tolist()


def test_calibrated_threshold_separates_members_best():
    scores = -np.array([1.0, 2.0, 3.0, 10.0, 11.0, 3.5])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert calibrate_threshold(scores, labels) == pytest.approx(3.25)
    assert calibrate_threshold(-np.array([1.0, 2.0, 3.0, 10.0, 11.0, 2.5]), labels) == pytest.approx(2.25)  # ties: the first


def test_calibrated_params_fit_on_the_features_and_keep_a_given_threshold():
    a = make_attack(RecordingVariationTarget(), n="auto", max_n=4, stop_threshold=0.5)
    assert a.needs_calibration()  # the threshold is given, the fit is not
    u = np.random.default_rng(1).normal(size=(10, 4))
    got = a.calibrated_params(np.zeros(10), np.r_[np.ones(5), np.zeros(5)], features=u)
    assert set(got) == {"stop_model"} and got["stop_model"] == fit_stop_model(u)
    assert a.calibrated_params(np.zeros(10), np.r_[np.ones(5), np.zeros(5)], features=None) == {}


@pytest.mark.parametrize(
    "target, params, word",
    [
        (RecordingLatentTarget, {}, "pixel variant and distance l2"),
        (RecordingVariationTarget, {"distance": "l1"}, "distance l2"),
        (RecordingVariationTarget, {"min_n": 5, "max_n": 4}, "min_n=5"),
        (RecordingVariationTarget, {"max_n": 4, "stop_model": [[1.0, 0.0, 0.1]] * 2}, "stop_model needs one"),
    ],
)
def test_invalid_adaptive_params(target, params, word):
    with pytest.raises(ConfigError, match=word):
        make_attack(target(), n="auto", **params)


# ---------------------------------------------------------------------- through the runner
def test_adaptive_run_is_batch_size_independent_and_resumes_to_the_same_scores(run_cfg, audit_cli, tmp_path):
    import csv
    import shutil
    import sqlite3

    from audit_core.testing import assert_batch_size_independent

    # 2 + 2 calibration images (the fit needs at least 3), 3 + 3 held out; stop_z 0.5 so some stop early
    cfg = run_cfg("rec-variation", {"t": 100, "k": 50, "n": "auto", "max_n": 6, "stop_z": 0.5},
                  inference={"calibration_fraction": 0.4})
    rows = assert_batch_size_independent(audit_cli, cfg, tmp_path / "bs", sizes=(1, 8))
    assert {r["split"] for r in rows} == {"calibration", "evaluation"}
    first = tmp_path / "bs" / "bs1-0"
    e = results(first)["attacks"]["rediffuse"]
    cp = e["scorer"]["calibrated_params"]
    tau = cp["stop_threshold"]
    assert isinstance(tau, float) and e["n_members"] + e["n_nonmembers"] == 6  # the held-out 60 %
    assert len(cp["stop_model"]) == 5  # one [a, b, s] per prefix m = 1 .. max_n - 1
    assert 1 <= e["queries_per_image_evaluation"] <= 6
    hist = e["queries_histogram_evaluation"]
    assert min(int(k) for k in hist) < 6  # some images stopped early, so batching and resume could matter
    assert sum(hist.values()) == 6 and sum(int(k) * v for k, v in hist.items()) == pytest.approx(6 * e["queries_per_image_evaluation"])
    # resume after losing the held-out images' scores: the threshold is re-derived from the stored
    # calibration scores, and every score comes out the same
    again = tmp_path / "resumed"
    shutil.copytree(first, again)
    cal = [r["image_id"] for r in rows if r["split"] == "calibration"]
    db = sqlite3.connect(again / "state.sqlite")
    db.execute(f"DELETE FROM scores WHERE image_id NOT IN ({','.join('?' * len(cal))})", cal)
    assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == len(cal)  # the fit is re-derived from these
    db.execute("DELETE FROM meta WHERE key = 'finished'")
    db.commit()
    db.close()
    code, output = audit_cli("run", cfg, "--output", again, "--resume", "--set", "run.batch_size=3")
    assert code == 0, output
    assert (again / "scores.csv").read_text() == (first / "scores.csv").read_text()
    assert list(csv.DictReader((again / "scores.csv").open()))[0]["attack"] == "rediffuse"


def results(out):
    import json

    return json.loads((out / "results.json").read_text())


def test_sweep_report_has_the_auc_vs_queries_curve_on_the_same_held_out_images(run_cfg, audit_cli, tmp_path):
    from audit_core.run.reporting import sweeps_markdown
    from audit_core.run.sweeps import queries_curve

    common = {"t": 100, "k": 50}
    cfg = run_cfg(
        "rec-variation",
        attacks=[
            {"plugin": "rediffuse", "name": "fixed", "seed_key": "rediffuse", "params": {**common, "n": [2, 6]}},
            {"plugin": "rediffuse", "name": "auto", "seed_key": "rediffuse",
             "params": {**common, "n": "auto", "max_n": 6, "stop_z": [0.5, 3.0]}},
        ],
        inference={"calibration_fraction": 0.4},
    )
    out = tmp_path / "sweep"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 0, output
    res = results(out)
    curve = queries_curve(res["sweeps"])
    assert [r["attack"] for r in curve if not r["adaptive"]] == ["fixed[n=2]", "fixed[n=6]"]
    assert len(curve) == 4 and [r["queries_per_image"] for r in curve] == sorted(r["queries_per_image"] for r in curve)
    for r in curve:  # every point's AUC is on the 6 held-out images, whatever its own split
        e = res["attacks"][r["attack"]]
        if r["adaptive"]:
            assert r["auc"]["value"] == pytest.approx(e["metrics"]["auc"]["value"])
            assert sum(r["histogram"].values()) == 6
        held = [row for row in scores_rows(out) if row["attack"] == r["attack"] and row["image_id"] not in calibration_ids(out)]
        assert len(held) == 6
        from sklearn.metrics import roc_auc_score

        y = [1 if row["label"] == "member" else 0 for row in held]
        assert r["auc"]["value"] == pytest.approx(roc_auc_score(y, [float(row["score"]) for row in held]))
    md = sweeps_markdown(res["sweeps"])
    assert "**AUC vs queries per image**" in md and "| fixed[n=6] | fixed (n=6) | 6.00 |" in md
    assert "AUC vs queries per image" in " ".join(output.split())


def scores_rows(out):
    import csv

    return list(csv.DictReader((out / "scores.csv").open()))


def calibration_ids(out):
    return {r["image_id"] for r in scores_rows(out) if r.get("split") == "calibration"}
