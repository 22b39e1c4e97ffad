"""The set-level test with a single image on one side and tied scores (scipy's permutation test
needs two observations per side: it raised instead of answering)."""

from __future__ import annotations

import numpy as np
import pytest

from audit_core.copyright import inference


def _brute_p(x, y) -> float:
    """Every way to choose len(x) of the pooled scores as 'suspects', equally likely."""
    from itertools import combinations

    pooled = list(x) + list(y)

    def u(a, b):
        return sum((s > r) + 0.5 * (s == r) for s in a for r in b)

    observed = u(x, y)
    picks = list(combinations(range(len(pooled)), len(x)))
    hits = 0
    for pick in picks:
        a = [pooled[i] for i in pick]
        b = [pooled[i] for i in range(len(pooled)) if i not in pick]
        hits += u(a, b) >= observed - 1e-9
    return hits / len(picks)


@pytest.mark.parametrize(("x", "y"), [
    ([5.0], [1.0, 1.0, 2.0]),
    ([1.0], [1.0, 1.0, 2.0, 0.5]),
    ([2.0], [2.0, 2.0, 2.0]),
    ([1.0, 1.0, 2.0, 3.0], [1.0]),
    ([0.0, 0.0, 4.0], [0.0]),
])
def test_one_image_on_a_side_gets_the_exact_permutation_p(x, y):
    from scipy import stats

    res = inference.set_test(x, y)
    assert res["p_value"] == pytest.approx(_brute_p(x, y))
    assert "exact permutation" in res["test"]
    u = float(stats.mannwhitneyu(x, y, alternative="greater").statistic)  # ties count one half
    assert res["u_statistic"] == u and res["effect_auc"] == u / (len(x) * len(y))


def test_copyright_inference_with_one_suspect_and_tied_reference():
    rng = np.random.default_rng(0)
    ref = np.round(rng.normal(size=200), 1)  # rounded: many ties
    res = inference.copyright_inference([3.5], ref)[0]
    assert res["p_value"] == pytest.approx(_brute_p([3.5], list(ref)))
    assert res["p_value"] == pytest.approx(1 / 201)  # above every reference image


def test_threshold_at_fpr_one_is_the_smallest_reference_score():
    from audit_core.stats.metrics import threshold_at_fpr

    ref = [3.0, 1.0, 2.0, 5.0]
    assert threshold_at_fpr(ref, 1.0) == 1.0  # was 5.0: the index wrapped round to the largest
    assert threshold_at_fpr(ref, 0.5) == 2.0 and threshold_at_fpr(ref, 0.0) == 5.0
