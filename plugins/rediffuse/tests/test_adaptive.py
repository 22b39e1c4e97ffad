"""Tests of ReDiffuse's adaptive budget (``n: auto``): the estimate by hand, the whole budget equals
a fixed-n run, per-image seeds (draws equal a fixed run's, scores and queries independent of
batching), early stopping only when decisive, threshold calibration, and param validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from audit_rediffuse.adaptive import calibrate_threshold, estimate

from audit_core import seeding
from audit_core.attacks import Batch
from audit_core.errors import ConfigError

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


def test_estimate_by_hand():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 4, 4, generator=g, dtype=torch.float64)
    v = 0.7 * x + 0.2 * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    d_hat, se = estimate(x, v, max_n=10)
    x_bar = v.mean(0)
    b = (x - x_bar).numpy().ravel()
    vs = v.numpy().reshape(3, -1)
    s2 = vs.var(axis=0, ddof=1).sum()
    assert d_hat == pytest.approx((b**2).sum() - s2 * (1 / 3 - 1 / 10), rel=1e-12)
    q = (vs - vs.mean(0)) @ b
    assert se == pytest.approx(2 * np.sqrt((q**2).sum() / 2 * (1 / 3 - 1 / 10)), rel=1e-12)
    assert estimate(x, v, max_n=3)[1] == 0.0  # the whole budget: no correction, no error


def test_without_a_threshold_every_image_gets_max_n_and_the_fixed_n_score():
    batch = make_batch(b=4, seed=1)
    fixed = make_attack(RecordingVariationTarget(), n=6).score(batch)
    out = make_attack(RecordingVariationTarget(), n="auto", max_n=6, min_n=2).score(batch)
    torch.testing.assert_close(out.scores.float(), fixed.scores.float(), rtol=1e-6, atol=1e-6)
    assert out.queries.tolist() == [6, 6, 6, 6]
    torch.testing.assert_close(out.reconstructions, fixed.reconstructions, rtol=1e-6, atol=1e-6)


def test_stops_early_only_when_decisive_and_draws_are_a_fixed_runs():
    batch = make_batch(b=6, seed=2)
    full = make_attack(RecordingVariationTarget(), n=10).score(batch)
    tau = float(np.median(-full.scores.numpy()))
    target = RecordingVariationTarget()
    out = make_attack(target, n="auto", max_n=10, min_n=2, stop_z=2.0, stop_threshold=tau).score(batch)
    spent = out.queries.numpy()
    assert spent.min() < 10 and (spent >= 2).all()
    assert sum(c["rows"] for c in target.calls) == spent.sum()  # one row per draw, nothing wasted
    for i in range(6):
        m = int(spent[i])
        v = variations(batch, i, range(m))
        d_hat, se = estimate(batch.images[i], v, 10)
        if m < 10:  # stopped: decisive at m, and not at m - 1
            assert abs(d_hat - tau) > 2.0 * se and out.scores[i].item() == pytest.approx(-d_hat, rel=1e-9)
            if m > 2:
                d_prev, se_prev = estimate(batch.images[i], v[:-1], 10)
                assert abs(d_prev - tau) <= 2.0 * se_prev
        else:
            assert out.scores[i].item() == pytest.approx(full.scores[i].item(), rel=1e-5)
    # every call after the first asks for draw m of the undecided images, with that draw's seed
    seeds = [s for c in target.calls for s in c["seeds"]]
    want = {seeding.derive_seed(0, "rediffuse", batch.ids[i], d) for i in range(6) for d in range(int(spent[i]))}
    assert sorted(seeds) == sorted(want)


def test_scores_and_queries_do_not_depend_on_batching():
    big = make_batch(b=6, seed=3)
    a = make_attack(RecordingVariationTarget(), n="auto", max_n=8, stop_threshold=0.5)
    whole = a.score(big)
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


@pytest.mark.parametrize(
    "target, params, word",
    [
        (RecordingLatentTarget, {}, "pixel variant and distance l2"),
        (RecordingVariationTarget, {"distance": "l1"}, "distance l2"),
        (RecordingVariationTarget, {"min_n": 5, "max_n": 4}, "min_n=5"),
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

    cfg = run_cfg("rec-variation", {"t": 100, "k": 50, "n": "auto", "max_n": 6})
    rows = assert_batch_size_independent(audit_cli, cfg, tmp_path / "bs", sizes=(1, 8))
    assert {r["split"] for r in rows} == {"calibration", "evaluation"}
    first = tmp_path / "bs" / "bs1-0"
    e = results(first)["attacks"]["rediffuse"]
    tau = e["scorer"]["calibrated_params"]["stop_threshold"]
    assert isinstance(tau, float) and e["n_members"] + e["n_nonmembers"] == 8  # the held-out 80 %
    assert 2 <= e["queries_per_image_evaluation"] <= 6
    # resume after losing the held-out images' scores: the threshold is re-derived from the stored
    # calibration scores, and every score comes out the same
    again = tmp_path / "resumed"
    shutil.copytree(first, again)
    cal = [r["image_id"] for r in rows if r["split"] == "calibration"]
    db = sqlite3.connect(again / "state.sqlite")
    db.execute(f"DELETE FROM scores WHERE image_id NOT IN ({','.join('?' * len(cal))})", cal)
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
