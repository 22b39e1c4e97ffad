"""The metrics module's stated behaviour, each against a brute-force reference (issue 25: these
pin what `make mutate` showed unpinned): each bootstrap resample's metrics equal the point
metrics of that resample, chunks stay under the memory bound, the ROC thinning keeps what its
docstring says, the calibrated operating point and the ``compute`` block by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_curve

from audit_core.stats import metrics

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scores_labels = st.integers(2, 16).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-3, 3).map(float), min_size=n, max_size=n),  # many ties
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
    )
)


# ----------------------------------------------------------------------------- input checks
def test_check_returns_float64_scores_and_int64_labels():
    s, y = metrics._check([1, 2, 3], [True, False, True])
    assert s.dtype == np.float64 and y.dtype == np.int64
    assert metrics.roc(np.array([1, 2, 3], dtype=np.int32), [1, 0, 1])[2].dtype == np.float64
    assert metrics.roc(np.array([1, 2, 3], dtype=np.float32), [1, 0, 1])[2].dtype == np.float64


@pytest.mark.parametrize("scores,labels,message", [
    ([1.0, 2.0], [1, 0, 1], "scores and labels must be 1-D arrays of the same length"),
    ([[1.0, 2.0]], [[1, 0]], "scores and labels must be 1-D arrays of the same length"),  # same shape, 2-D
    ([1.0, np.nan], [1, 0], "scores contain NaN or infinity"),
    ([1.0, np.inf], [1, 0], "scores contain NaN or infinity"),
    ([1.0, 2.0], [1, 1], "metrics need at least one member and one non-member"),
    ([1.0, 2.0], [0, 0], "metrics need at least one member and one non-member"),
])
def test_bad_inputs_are_refused_with_their_reason(scores, labels, message):
    for fn in (metrics.point_metrics, metrics.bootstrap_draws, metrics.compute, metrics.calibrated_operating_point):
        with pytest.raises(ValueError, match=f"^{message}$"):
            fn(scores, labels)


# ----------------------------------------------------------------------------- ROC, TPR@FPR
@FAST
@given(scores_labels)
def test_roc_equals_scikit_learn(data):
    s, y = np.array(data[0]), np.array(data[1])
    for drop in (False, True):
        for ours, theirs in zip(metrics.roc(s, y, drop_intermediate=drop), roc_curve(y, s, drop_intermediate=drop)):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seed", [6, 9])
def test_auc_is_scikit_learns_bit_for_bit(seed):
    """The trapezoid over the ROC without its collinear points, as roc_auc_score computes it
    (over every point the sum rounds differently for these data)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    s, y = np.round(rng.normal(size=n), int(rng.integers(0, 3))), rng.integers(0, 2, n)
    assert metrics.point_metrics(s, y)["auc"] == roc_auc_score(y, s)
    f, t, _ = metrics.roc(s, y)
    assert float(np.trapezoid(t, f)) != roc_auc_score(y, s)  # what the plain trapezoid would give


def test_roc_drops_the_collinear_middle_of_three_points():
    # three tied member/non-member pairs: (1, 1), (2, 2), (3, 3) in counts; the middle one is collinear
    s, y = np.array([2.0, 2.0, 1.0, 1.0, 0.0, 0.0]), np.array([1, 0, 1, 0, 1, 0])
    fpr, tpr, thr = metrics.roc(s, y, drop_intermediate=True)
    assert fpr.tolist() == [0.0, 1 / 3, 1.0] and tpr.tolist() == [0.0, 1 / 3, 1.0] and thr.tolist() == [np.inf, 2.0, 0.0]
    assert len(metrics.roc(s, y)[0]) == 4


def test_tpr_at_fpr_edges():
    fpr, tpr = np.array([0.0, 0.01 + 1e-12, 0.5, 1.0]), np.array([0.0, 0.4, 0.9, 1.0])
    assert metrics.tpr_at_fpr(fpr, tpr, 0.01) == 0.4  # within the 1e-12 tolerance, the bound included
    assert metrics.tpr_at_fpr(np.array([0.02, 1.0]), np.array([0.3, 1.0]), 0.01) == 0.0  # no point at or below
    assert metrics.tpr_at_fpr(np.array([0.0, 0.5]), np.array([0.7, 0.2]), 0.5) == 0.7  # the largest, not the last


# ----------------------------------------------------------------------------- bootstrap
def _resamples(n_pos: int, n_neg: int, n: int, seed: int) -> np.ndarray:
    return np.concatenate(list(metrics.resample_positions(n_pos, n_neg, n, seed)))


@FAST
@given(scores_labels, st.integers(0, 3))
def test_each_bootstrap_draw_is_the_point_metrics_of_its_resample(data, seed):
    s, y = np.array(data[0]), np.array(data[1])
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = metrics.bootstrap_draws(s, y, 12, seed)
    for b, row in enumerate(_resamples(len(pos), len(neg), 12, seed)):
        idx = np.r_[pos[row[: len(pos)]], neg[row[len(pos) :]]]
        want = metrics.point_metrics(s[idx], y[idx])
        for key, value in want.items():
            assert draws[key][b] == pytest.approx(value, abs=1e-12), (key, b)


@pytest.mark.parametrize("n_neg", [100, 1000])
def test_bootstrap_tpr_at_fpr_counts_nonmembers_at_the_level(n_neg):
    """With 100 (1000) non-members one false positive is exactly 1 % (0.1 %): each resample's
    TPR@FPR is its point metric, the point at the level included."""
    rng = np.random.default_rng(n_neg)
    s, y = np.round(rng.normal(size=40 + n_neg) + np.r_[np.ones(40), np.zeros(n_neg)], 1), np.r_[np.ones(40, int), np.zeros(n_neg, int)]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = metrics.bootstrap_draws(s, y, 10, 1)
    for b, row in enumerate(_resamples(40, n_neg, 10, 1)):
        idx = np.r_[pos[row[:40]], neg[row[40:]]]
        want = metrics.point_metrics(s[idx], y[idx])
        for key in metrics.LEVELS:
            assert draws[key][b] == want[key], (key, b)


def test_bootstrap_defaults_and_percentiles():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=300), np.r_[np.ones(120, int), np.zeros(180, int)]  # near-continuous metrics
    draws = metrics.bootstrap_draws(s, y)
    assert all(len(v) == 1000 for v in draws.values())
    for key, v in metrics.bootstrap_draws(s, y, 1000, 0).items():
        np.testing.assert_array_equal(draws[key], v)
    ci = metrics.bootstrap_ci(s, y)
    assert ci == metrics.bootstrap_ci(s, y, 1000, 0)
    assert ci == {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}
    assert metrics.bootstrap_ci(s, y, 0) == {} and metrics.bootstrap_ci(s, y, -3) == {}


def test_bootstrap_chunks_stay_under_the_memory_bound(monkeypatch):
    """Each chunk holds at most CHUNK_CELLS resample x max(distinct scores, samples) cells (at
    least one resample), and the draws do not depend on the chunking."""
    s = np.round(np.random.default_rng(1).normal(size=40), 1)
    y = np.r_[np.ones(15, int), np.zeros(25, int)]
    k, whole = len(np.unique(s)), metrics.bootstrap_draws(s, y, 50, 3)
    seen: list[int] = []
    real = metrics.resample_positions

    def spy(*args):
        for block in real(*args):
            seen.append(len(block))
            yield block

    monkeypatch.setattr(metrics, "resample_positions", spy)
    for cells, want in ((7 * 40, 7), (40 * 50, 50), (10**9, 50), (39, 1)):
        monkeypatch.setattr(metrics, "CHUNK_CELLS", cells)
        seen.clear()
        got = metrics.bootstrap_draws(s, y, 50, 3)
        assert max(k, len(s)) == 40 and seen[0] == want and sum(seen) == 50, (cells, seen)
        for key in whole:
            np.testing.assert_array_equal(got[key], whole[key])


# ----------------------------------------------------------------------------- compute
def test_compute_block_by_hand():
    rng = np.random.default_rng(2)
    s, y = rng.normal(size=200), np.r_[np.ones(100, int), np.zeros(100, int)]
    out = metrics.compute(s, y, bootstrap=50, seed=3)
    point, ci = metrics.point_metrics(s, y), metrics.bootstrap_ci(s, y, 50, 3)
    assert out == {
        "auc": {"value": point["auc"], "ci95": ci["auc"]},
        "asr": {"value": point["asr"], "ci95": ci["asr"]},  # balanced: no note
        "tpr_at_1pct_fpr": {"value": point["tpr_at_1pct_fpr"], "ci95": ci["tpr_at_1pct_fpr"], "supported": True},
        "tpr_at_0_1pct_fpr": {
            "value": point["tpr_at_0_1pct_fpr"], "ci95": ci["tpr_at_0_1pct_fpr"], "supported": False,
            "note": "unsupported: 100 non-members give an FPR resolution of 1.00%, coarser than 0.1%",
        },
    }
    assert metrics.compute(s, y) == metrics.compute(s, y, 1000, 0)
    plain = metrics.compute(s, y, bootstrap=0)
    assert all(e["ci95"] == [e["value"], e["value"]] for e in plain.values())


def test_compute_support_is_one_nonmember_per_level_and_unbalanced_is_noted():
    y = np.r_[np.ones(3, int), np.zeros(1000, int)]
    s = np.random.default_rng(4).normal(size=len(y))
    out = metrics.compute(s, y, bootstrap=0)
    assert out["tpr_at_0_1pct_fpr"]["supported"] is True and "note" not in out["tpr_at_0_1pct_fpr"]
    assert out["asr"]["note"] == "unbalanced sets: ASR is the best balanced accuracy"
    small = metrics.compute(s[:53], y[:53], bootstrap=0)  # 50 non-members
    assert small["tpr_at_1pct_fpr"]["supported"] is False
    assert small["tpr_at_1pct_fpr"]["note"] == "unsupported: 50 non-members give an FPR resolution of 2.00%, coarser than 1.0%"


# ----------------------------------------------------------------------------- operating point
def test_calibrated_operating_point_by_hand():
    s = np.r_[np.arange(10.0, 20.0), np.arange(0.0, 50.0)]  # 10 members, 50 non-members
    y = np.r_[np.ones(10, int), np.zeros(50, int)]
    out = metrics.calibrated_operating_point(s, y, alpha=0.1, fraction=0.2, seed=5)
    neg = np.random.default_rng(5).permutation(np.flatnonzero(y == 0))  # the documented split
    cal, rest = neg[:10], neg[10:]
    thr = metrics.threshold_at_fpr(s[cal], 0.1)
    assert out == {
        "alpha": 0.1, "threshold": thr, "n_calibration": 10,
        "tpr": float(np.mean(s[:10] > thr)), "fpr": float(np.mean(s[rest] > thr)),
        "n_eval_members": 10, "n_eval_nonmembers": 40,
    }
    assert metrics.calibrated_operating_point(s, y) == metrics.calibrated_operating_point(s, y, 0.01, 0.2, 0)


def test_calibrated_operating_point_strict_threshold_and_small_sets():
    # every score ties with the threshold: strictly above is none of them
    tied = metrics.calibrated_operating_point(np.ones(8), np.r_[np.ones(3, int), np.zeros(5, int)], alpha=0.5, fraction=0.4)
    assert tied["threshold"] == 1.0 and tied["tpr"] == 0.0 and tied["fpr"] == 0.0
    one = metrics.calibrated_operating_point([2.0, 1.0], [1, 0], alpha=0.5)  # the only non-member calibrates
    assert one["n_calibration"] == 1 and one["fpr"] is None and one["n_eval_nonmembers"] == 0
    three = metrics.calibrated_operating_point([5.0, 1.0, 2.0, 3.0], [1, 0, 0, 0], alpha=0.5)
    assert three["n_calibration"] == 1  # round(0.6) = 1
    assert three["note"] == "1 calibration non-members cannot resolve an FPR of 0.5; the threshold is their maximum"
    ok = metrics.calibrated_operating_point(np.arange(101.0), np.r_[1, np.zeros(100, int)], alpha=0.01, fraction=1.0)
    assert ok["n_calibration"] == 100 and "note" not in ok  # 100 x 0.01 = 1: resolvable
    ok = metrics.calibrated_operating_point(np.arange(151.0), np.r_[1, np.zeros(150, int)], alpha=0.01, fraction=1.0)
    assert "note" not in ok


def test_threshold_at_fpr_by_hand():
    ref = [3, 1, 2, 5, 4]
    for alpha, want in ((0.0, 5.0), (0.19, 5.0), (0.2, 4.0), (0.5, 3.0), (0.99, 1.0)):
        got = metrics.threshold_at_fpr(ref, alpha)
        assert got == want and type(got) is float
        assert sum(r > got for r in ref) <= alpha * len(ref)


# ----------------------------------------------------------------------------- ROC thinning
def _thinned_by_hand(fpr: np.ndarray, max_points: int) -> set[int]:
    """The indices roc_points keeps, by its docstring: all when there are at most max_points;
    otherwise half of max_points (at least 2) evenly spaced along the curve, both ends, and for
    each of half log-spaced FPR levels from the smallest positive FPR to 1 and each reported
    level, the last point with FPR at or below the level."""
    n = len(fpr)
    if n <= max_points:
        return set(range(n))
    half = max(2, max_points // 2)
    keep = {int(round(i * (n - 1) / (half - 1))) for i in range(half)} | {0, n - 1}
    lo = min(f for f in fpr if f > 0)
    levels = [lo * (1.0 / lo) ** (j / (half - 1)) for j in range(half)] + list(metrics.LEVELS.values())
    for level in levels:
        keep.add(max(i for i in range(n) if fpr[i] <= level * (1 + 1e-9)))
    return keep


@pytest.mark.parametrize("n_neg,max_points", [(2000, 400), (300, 40), (300, 4), (300, 5), (60, 7)])
def test_roc_points_keep_what_the_docstring_says(n_neg, max_points):
    rng = np.random.default_rng(n_neg + max_points)
    s = np.r_[rng.normal(1, 1, 40), rng.normal(0, 1, n_neg)]
    y = np.r_[np.ones(40, int), np.zeros(n_neg, int)]
    fpr, tpr, _ = metrics.roc(s, y)
    got = metrics.roc_points(s, y, max_points)
    keep = sorted(_thinned_by_hand(fpr, max_points))
    assert got == {"fpr": [float(fpr[i]) for i in keep], "tpr": [float(tpr[i]) for i in keep]}


def test_roc_points_defaults_and_no_thinning_up_to_max_points():
    s = np.arange(9.0)
    y = np.r_[np.ones(4, int), np.zeros(5, int)]
    fpr, tpr, _ = metrics.roc(s, y)
    assert len(fpr) == 10
    assert metrics.roc_points(s, y, 10) == {"fpr": fpr.tolist(), "tpr": tpr.tolist()}  # exactly max_points: all
    big = np.random.default_rng(0).normal(size=400)  # 400 distinct scores: 401 ROC points, one over the default
    yb = np.r_[np.ones(200, int), np.zeros(200, int)]
    assert len(metrics.roc(big, yb)[0]) == 401
    thinned = metrics.roc_points(big, yb)
    assert thinned == metrics.roc_points(big, yb, 400) and len(thinned["fpr"]) < 401


def test_roc_points_keep_the_point_exactly_at_each_reported_level():
    # 1000 non-members: FPR 0.001 and 0.01 are ROC points; the last point at each is kept
    rng = np.random.default_rng(6)
    s = np.r_[rng.normal(2, 1, 300), rng.normal(0, 1, 1000)]
    y = np.r_[np.ones(300, int), np.zeros(1000, int)]
    fpr, tpr, _ = metrics.roc(s, y)
    got = metrics.roc_points(s, y, 20)
    for level in metrics.LEVELS.values():
        i = int(np.flatnonzero(fpr <= level)[-1])
        assert fpr[i] == level and (fpr[i], tpr[i]) in set(zip(got["fpr"], got["tpr"]))
