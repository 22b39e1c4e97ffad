"""Every metric against hand-computed values."""

import numpy as np
import pytest

from audit_core.stats import metrics


def test_perfect_separation():
    s = [0.9, 0.8, 0.1, 0.2]
    y = [1, 1, 0, 0]
    m = metrics.point_metrics(s, y)
    assert m == {"auc": 1.0, "asr": 1.0, "tpr_at_1pct_fpr": 1.0, "tpr_at_0_1pct_fpr": 1.0}


def test_hand_computed_auc_asr_tpr():
    # members 0.9, 0.6, 0.3 ; non-members 0.8, 0.4, 0.1, 0.05
    s = [0.9, 0.6, 0.3, 0.8, 0.4, 0.1, 0.05]
    y = [1, 1, 1, 0, 0, 0, 0]
    # pairs (member > nonmember): 0.9 beats 4, 0.6 beats 3, 0.3 beats 2 -> 9 of 12
    m = metrics.point_metrics(s, y)
    assert m["auc"] == pytest.approx(9 / 12)
    # thresholds: >=0.9: TPR 1/3 FPR 0 -> 1-(0+2/3)/2 = 2/3; >=0.6: TPR 2/3 FPR 1/4 -> 1-(1/4+1/3)/2 = 0.7083
    # >=0.3: TPR 1, FPR 2/4 -> 0.75 ; >=0.1: TPR 1 FPR 3/4 -> 0.625
    assert m["asr"] == pytest.approx(0.75)
    # FPR <= 1%: only the 0.9 threshold (FPR 0) qualifies -> TPR 1/3
    assert m["tpr_at_1pct_fpr"] == pytest.approx(1 / 3)
    assert m["tpr_at_0_1pct_fpr"] == pytest.approx(1 / 3)


def test_ties_are_half_credit():
    m = metrics.point_metrics([0.5, 0.5], [1, 0])
    assert m["auc"] == 0.5
    assert m["tpr_at_1pct_fpr"] == 0.0  # the only threshold with FPR 0 accepts nothing


def test_tpr_at_fpr_uses_no_interpolation():
    fpr = np.array([0.0, 0.005, 0.02, 1.0])
    tpr = np.array([0.0, 0.3, 0.9, 1.0])
    assert metrics.tpr_at_fpr(fpr, tpr, 0.01) == 0.3


def test_exact_roc_not_a_grid():
    rng = np.random.default_rng(0)
    s = rng.normal(size=3001)
    y = (rng.random(3001) < 0.5).astype(int)
    fpr, tpr, _ = metrics.roc(s, y)
    assert len(fpr) == 3002  # every distinct score is a threshold


def test_unsupported_low_fpr_is_flagged():
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(1, 1, 200), rng.normal(0, 1, 200)])
    y = np.array([1] * 200 + [0] * 200)
    out = metrics.compute(s, y, bootstrap=20)
    assert out["tpr_at_1pct_fpr"]["supported"] is True  # 200 * 0.01 = 2 >= 1
    assert out["tpr_at_0_1pct_fpr"]["supported"] is False
    assert "unsupported" in out["tpr_at_0_1pct_fpr"]["note"]


def test_bootstrap_interval_contains_value_and_is_seeded():
    rng = np.random.default_rng(2)
    s = np.concatenate([rng.normal(0.5, 1, 100), rng.normal(0, 1, 100)])
    y = np.array([1] * 100 + [0] * 100)
    a = metrics.compute(s, y, bootstrap=200, seed=5)
    b = metrics.compute(s, y, bootstrap=200, seed=5)
    assert a == b
    lo, hi = a["auc"]["ci95"]
    assert lo < a["auc"]["value"] < hi
    assert 0.55 < a["auc"]["value"] < 0.75


def test_unbalanced_sets_are_noted():
    out = metrics.compute([1, 2, 3], [1, 0, 0], bootstrap=0)
    assert "unbalanced" in out["asr"]["note"]


def test_threshold_at_fpr():
    ref = np.arange(100, dtype=float)  # 0..99
    thr = metrics.threshold_at_fpr(ref, 0.05)
    assert thr == 94.0
    assert (ref > thr).sum() == 5
    assert metrics.threshold_at_fpr(ref, 0.001) == 99.0  # too few for that rate: the max


def test_calibrated_operating_point():
    s = np.array([10, 11, 12, 13] + list(range(10)), dtype=float)
    y = np.array([1] * 4 + [0] * 10)
    op = metrics.calibrated_operating_point(s, y, alpha=0.01, fraction=0.5, seed=0)
    assert op["n_calibration"] == 5 and op["n_eval_nonmembers"] == 5
    assert op["tpr"] == 1.0
    assert "cannot resolve" in op["note"]


def test_errors_on_single_class():
    with pytest.raises(ValueError):
        metrics.point_metrics([1, 2], [1, 1])


def test_roc_points_thinning_keeps_the_low_fpr_detail():
    from audit_core.stats.metrics import roc_points, tpr_at_fpr

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(5000), np.zeros(5000)].astype(int)
    scores = np.r_[rng.normal(1.5, 1, 5000), rng.normal(0, 1, 5000)]
    full = metrics.roc(scores, labels)
    pts = roc_points(scores, labels, max_points=200)
    fpr, tpr = np.array(pts["fpr"]), np.array(pts["tpr"])
    assert len(fpr) <= 202 and fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # each decade of FPR down to 1e-3 keeps points, and TPR@0.1%FPR read off the thinned curve is exact
    for lo in (1e-3, 1e-2, 1e-1):
        assert ((fpr >= lo) & (fpr < 10 * lo)).sum() >= 10, lo
    for level in (1e-3, 1e-2):
        assert tpr_at_fpr(fpr, tpr, level) == tpr_at_fpr(full[0], full[1], level)
