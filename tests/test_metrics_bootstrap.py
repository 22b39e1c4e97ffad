"""The vectorized metrics against scikit-learn and the per-resample bootstrap they replace."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from audit_core.stats import metrics


def _data(n_pos: int, n_neg: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(0.7, 1, n_pos), rng.normal(0, 1, n_neg)])
    if ties:
        s = np.round(s, 1)  # many equal scores across the classes
    return s, np.array([1] * n_pos + [0] * n_neg)


def _sklearn_point(s, y) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    out = {"auc": float(roc_auc_score(y, s)), "asr": float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0))}
    for key, level in metrics.LEVELS.items():
        out[key] = metrics.tpr_at_fpr(fpr, tpr, level)
    return out


def _loop_bootstrap(s, y, n: int, seed: int) -> dict[str, list[float]]:
    """The bootstrap as it was: rng.choice per class per resample, scikit-learn per resample."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for key, value in _sklearn_point(s[idx], y[idx]).items():
            draws.setdefault(key, []).append(value)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


@pytest.mark.parametrize("n_pos,n_neg,ties", [(40, 60, False), (50, 50, True), (1, 30, True), (25, 7, False)])
def test_point_metrics_and_roc_equal_scikit_learn(n_pos, n_neg, ties):
    s, y = _data(n_pos, n_neg, 3, ties)
    assert metrics.point_metrics(s, y) == _sklearn_point(s, y)  # bit for bit
    for drop in (False, True):
        ours, theirs = metrics.roc(s, y, drop_intermediate=drop), roc_curve(y, s, drop_intermediate=drop)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n_pos,n_neg,ties,seed", [(40, 60, False, 0), (30, 30, True, 7), (1, 20, True, 1)])
def test_bootstrap_equals_the_per_resample_loop(n_pos, n_neg, ties, seed):
    s, y = _data(n_pos, n_neg, seed, ties)
    ours, ref = metrics.bootstrap_ci(s, y, 100, seed), _loop_bootstrap(s, y, 100, seed)
    assert ours.keys() == ref.keys()
    for key in ref:
        np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=1e-12, err_msg=key)


def _loop_positions(rng: np.random.Generator, n_pos: int, n_neg: int, n: int) -> np.ndarray:
    """The resamples as the loop draws them: two ``integers`` calls per resample."""
    return np.array([np.r_[rng.integers(0, n_pos, n_pos), rng.integers(0, n_neg, n_neg)] for _ in range(n)])


@pytest.mark.parametrize("n_pos,n_neg,n,chunk", [(33, 17, 50, None), (33, 17, 50, 7), (1, 4, 6, 4), (6, 1, 5, 2), (1, 1, 3, 1), (2, 3, 9, 9)])
def test_resamples_equal_the_per_resample_loop_whatever_the_chunking(n_pos, n_neg, n, chunk):
    got = list(metrics.resample_positions(n_pos, n_neg, n, seed=4, chunk=chunk))
    assert [len(b) for b in got] == [min(chunk or n, n - s) for s in range(0, n, chunk or n)]
    np.testing.assert_array_equal(np.concatenate(got), _loop_positions(np.random.default_rng(4), n_pos, n_neg, n))


def test_a_draw_numpy_redraws_is_redrawn_as_in_the_loop():
    # a pending half-word of 0 maps to (0 * 3) mod 2**32 = 0 < 2**32 mod 3 = 1: numpy redraws it
    def primed() -> np.random.Generator:
        rng = np.random.default_rng(5)
        st = rng.bit_generator.state
        st["has_uint32"], st["uinteger"] = 1, 0
        rng.bit_generator.state = st
        return rng

    bulk, loop = primed(), primed()
    highs = np.repeat(np.array([3, 4]), [3, 4])
    np.testing.assert_array_equal(bulk.integers(0, np.broadcast_to(highs, (2, 7))), _loop_positions(loop, 3, 4, 2))
    assert bulk.bit_generator.state == loop.bit_generator.state
