"""Membership-inference metrics. Members are the positive class; higher score = member.

- AUC over the exact ROC (every threshold kept; the trapezoid rule, as scikit-learn computes it).
- ASR: best balanced accuracy, max over ROC points of ``1 - (FPR + FNR) / 2``.
- TPR@x%FPR: the largest TPR among ROC points with FPR <= x (no interpolation past the level);
  flagged ``supported: false`` when the level is finer than 1 / N_nonmembers.
- 95 % intervals from a seeded bootstrap over samples (members and non-members resampled
  separately, keeping the class sizes), all resamples at once: rank statistics on a matrix of
  resample indices.

numpy only: scikit-learn's import alone costs seconds, and the exact ROC is a sort and a cumsum.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

LEVELS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}
#: the most resample x distinct-score cells one bootstrap chunk holds (~8 bytes each, a few arrays)
CHUNK_CELLS = 2_000_000


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores as float64, labels as int64)``, or a ValueError saying what is wrong."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError("scores and labels must be 1-D arrays of the same length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError("metrics need at least one member and one non-member")
    return scores, labels


def _counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fps, tps, thresholds) at every distinct score, highest first (scikit-learn's
    ``_binary_clf_curve``: the same stable sort and float64 counts, so the same floats)."""
    # a tie's members are counted at its last position whatever their order within it, so the
    # sort's stability changes nothing: no mutation of ``kind`` can show
    order = np.argsort(scores, kind="mergesort")[::-1]  # pragma: no mutate
    s, member = scores[order], labels[order] == 1
    y = member.astype(np.float64)  # pragma: no mutate (astype(None) is float64 too)
    idx = np.r_[np.where(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[idx]
    fidx = idx.astype(np.float64)  # pragma: no mutate (astype(None) is float64 too)
    return 1 + fidx - tps, tps, s[idx]


def roc(scores, labels, drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC: (fpr, tpr, thresholds) from (0, 0) at threshold +inf, every distinct threshold
    kept (``drop_intermediate``: drop points collinear with their neighbours, as for the AUC)."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    fps, tps, thr = _counts(scores, labels)
    if drop_intermediate and len(fps) > 2:
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    return fps / fps[-1], tps / tps[-1], thr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    ok = fpr <= level + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def point_metrics(scores, labels) -> dict[str, float]:
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    fpr, tpr, _ = roc(scores, labels)
    fpr_auc, tpr_auc, _ = roc(scores, labels, drop_intermediate=True)
    out = {
        "auc": float(np.trapezoid(tpr_auc, fpr_auc)),
        "asr": float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0)),
    }
    for key, level in LEVELS.items():
        out[key] = tpr_at_fpr(fpr, tpr, level)
    return out


# ----- bootstrap --------------------------------------------------------------------------------
def resample_positions(n_pos: int, n_neg: int, n: int, seed: int, chunk: int | None = None) -> Iterator[np.ndarray]:
    """The seeded stratified resamples, ``chunk`` at a time: ``[chunk, n_pos + n_neg]`` positions
    into (members, non-members), members first. Resample b is ``rng.integers(0, n_pos, n_pos)``
    then ``rng.integers(0, n_neg, n_neg)`` (what ``rng.choice(pos, n_pos)``, ``rng.choice(neg,
    n_neg)`` draw), so the same resamples whatever the chunking.

    One ``integers`` call per chunk with an array of (exclusive) upper bounds: numpy draws such an array
    element by element in C order from the same stream of 32-bit values, rejections included, as
    those per-resample calls (tests/test_metrics_bootstrap.py checks it against the loop)."""
    rng = np.random.default_rng(seed)
    chunk = chunk or n
    highs = np.repeat([n_pos, n_neg], [n_pos, n_neg])
    for start in range(0, n, chunk):
        yield rng.integers(np.broadcast_to(highs, (min(chunk, n - start), n_pos + n_neg)))  # each in [0, high)


def _resample_metrics(codes_pos: np.ndarray, codes_neg: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Every point metric of each resample row at once. ``codes_*``: ``[B, n]`` ranks (0 = lowest)
    of the resampled members' / non-members' scores among ``k`` distinct values.

    Per row, histograms over the distinct scores give the ROC point at every threshold in integer
    counts (an absent value repeats the point above it, which changes no maximum); the AUC is the
    Mann-Whitney statistic (ties count one half), equal to the trapezoid AUC up to float rounding."""
    b, n_pos = codes_pos.shape
    n_neg = codes_neg.shape[1]
    offset = (np.arange(b) * k)[:, None]
    h_pos = np.bincount((codes_pos + offset).ravel(), minlength=b * k).reshape(b, k)
    h_neg = np.bincount((codes_neg + offset).ravel(), minlength=b * k).reshape(b, k)
    below_neg = np.cumsum(h_neg, axis=1) - h_neg  # non-members strictly below each value
    tps = n_pos - (np.cumsum(h_pos, axis=1) - h_pos)  # members at or above each value
    fps = n_neg - below_neg
    rows = np.arange(b)
    # ASR: the point maximising TPR - FPR (exactly, in counts); the formula as point_metrics has it
    best = np.argmax(tps * n_neg - fps * n_pos, axis=1)
    tpr, fpr = tps[rows, best] / n_pos, fps[rows, best] / n_neg
    out = {
        "auc": (h_pos * (2 * below_neg + h_neg)).sum(axis=1) / (2.0 * n_pos * n_neg),
        "asr": np.maximum(1.0 - (fpr + (1.0 - tpr)) / 2.0, 0.5),  # 0.5: the (0, 0) point
    }
    for key, level in LEVELS.items():
        # points with FPR <= level are the values from some j0 up (fps falls as the value rises);
        # the largest TPR among them is at j0; none (j0 == k) leaves the (0, 0) point: TPR 0
        j0 = k - np.count_nonzero(fps / n_neg <= level + 1e-12, axis=1)  # tpr_at_fpr's test, same floats
        out[key] = np.where(j0 < k, tps[rows, np.minimum(j0, k - 1)], 0) / n_pos
    return out


def bootstrap_draws(scores, labels, n: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point metric on each of ``n`` seeded stratified resamples: ``{metric: [n]}``."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    values, codes = np.unique(scores, return_inverse=True)
    k = len(values)
    codes_pos, codes_neg = codes[pos], codes[neg]
    chunk = max(1, min(n, CHUNK_CELLS // max(k, len(scores))))
    parts: dict[str, list[np.ndarray]] = {}
    for block in resample_positions(len(pos), len(neg), n, seed, chunk):
        got = _resample_metrics(codes_pos[block[:, : len(pos)]], codes_neg[block[:, len(pos) :]], k)
        for key, values in got.items():
            parts.setdefault(key, []).append(values)
    return {key: np.concatenate(v) for key, v in parts.items()}


def bootstrap_ci(scores, labels, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Percentile 95 % intervals of every point metric, stratified bootstrap."""
    draws = bootstrap_draws(scores, labels, n, seed)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def compute(scores, labels, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The results.json ``metrics`` block plus notes: ``{name: {value, ci95[, supported]}}``."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    point = point_metrics(scores, labels)
    ci = bootstrap_ci(scores, labels, bootstrap, seed)
    n_neg = int((labels == 0).sum())
    n_pos = int((labels == 1).sum())
    out: dict[str, Any] = {}
    for key, value in point.items():
        entry: dict[str, Any] = {"value": value, "ci95": ci.get(key, [value, value])}
        if key in LEVELS:
            entry["supported"] = bool(n_neg * LEVELS[key] >= 1.0)
            if not entry["supported"]:
                entry["note"] = (
                    f"unsupported: {n_neg} non-members give an FPR resolution of {1 / n_neg:.2%}, "
                    f"coarser than {LEVELS[key]:.1%}"
                )
        out[key] = entry
    if n_pos != n_neg:
        out["asr"]["note"] = "unbalanced sets: ASR is the best balanced accuracy"
    return out


def roc_points(scores, labels, max_points: int = 400) -> dict[str, list[float]]:
    """ROC points for plotting, thinned to about ``max_points``: half spaced evenly along the
    curve (linear axes), half at log-spaced FPRs (the last point at or below each level, so the
    log-log plot keeps its low-FPR detail); the ends are always kept."""
    fpr, tpr, _ = roc(scores, labels)
    if len(fpr) > max_points:
        half = max(2, max_points // 2)
        linear = np.linspace(0, len(fpr) - 1, half).round().astype(int)
        levels = np.geomspace(fpr[fpr > 0].min(), 1.0, half)  # fpr ends at 1: never empty
        levels = np.concatenate([levels, list(LEVELS.values())])  # the reported operating points, exactly
        # fpr starts at 0, so every index is in 0 .. len - 1; linear holds both ends
        logspaced = np.searchsorted(fpr, levels * (1 + 1e-9), side="right") - 1
        keep = np.unique(np.concatenate([linear, logspaced]))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}


def calibrated_operating_point(
    scores, labels, alpha: float = 0.01, fraction: float = 0.2, seed: int = 0
) -> dict[str, Any]:
    """Threshold from a calibration split of the non-members at FPR ``alpha``; the TPR/FPR it
    achieves on the held-out rest (what a real auditor gets)."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    rng = np.random.default_rng(seed)
    neg = rng.permutation(np.flatnonzero(labels == 0))
    n_cal = max(1, int(round(len(neg) * fraction)))
    cal, rest_neg = neg[:n_cal], neg[n_cal:]
    thr = threshold_at_fpr(scores[cal], alpha)
    pos = np.flatnonzero(labels == 1)
    out = {
        "alpha": alpha,
        "threshold": thr,
        "n_calibration": int(n_cal),
        "tpr": float((scores[pos] > thr).mean()),  # _check: at least one member
        "fpr": float((scores[rest_neg] > thr).mean()) if len(rest_neg) else None,
        "n_eval_members": int(len(pos)),
        "n_eval_nonmembers": int(len(rest_neg)),
    }
    if n_cal * alpha < 1:
        out["note"] = f"{n_cal} calibration non-members cannot resolve an FPR of {alpha:g}; the threshold is their maximum"
    return out


def threshold_at_fpr(reference_scores, alpha: float) -> float:
    """The smallest threshold with at most ``alpha`` of the reference scores strictly above it."""
    # float64 or the scores' own dtype: the same order and the same float() of the chosen one
    ref = np.sort(np.asarray(reference_scores, dtype=np.float64))  # pragma: no mutate
    allowed = min(int(np.floor(alpha * len(ref))), len(ref) - 1)  # how many may exceed it (alpha=1: all but one)
    return float(ref[len(ref) - 1 - allowed])
