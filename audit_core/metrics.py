"""Membership-inference metrics. Members are the positive class; higher score = member.

- AUC over the exact ROC (scikit-learn's ``roc_curve`` keeps every threshold).
- ASR: best balanced accuracy, max over ROC points of ``1 - (FPR + FNR) / 2``.
- TPR@x%FPR: the largest TPR among ROC points with FPR <= x (no interpolation past the level);
  flagged ``supported: false`` when the level is finer than 1 / N_nonmembers.
- 95 % intervals from a seeded bootstrap over samples (members and non-members resampled
  separately, keeping the class sizes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

LEVELS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError("scores and labels must be 1-D arrays of the same length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError("metrics need at least one member and one non-member")
    return scores, labels


def roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC: (fpr, tpr, thresholds), every distinct threshold kept."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    return roc_curve(labels, scores, drop_intermediate=False)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    ok = fpr <= level + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def point_metrics(scores, labels) -> dict[str, float]:
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    out = {
        "auc": float(roc_auc_score(labels, scores)),
        "asr": float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0)),
    }
    for key, level in LEVELS.items():
        out[key] = tpr_at_fpr(fpr, tpr, level)
    return out


def bootstrap_ci(scores, labels, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Percentile 95 % intervals of every point metric, stratified bootstrap."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for key, value in point_metrics(scores[idx], labels[idx]).items():
            draws.setdefault(key, []).append(value)
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
        positive = fpr[fpr > 0]
        levels = np.geomspace(positive.min(), 1.0, half) if positive.size else np.array([])
        levels = np.concatenate([levels, list(LEVELS.values())])  # the reported operating points, exactly
        logspaced = np.searchsorted(fpr, levels * (1 + 1e-9), side="right") - 1
        keep = np.unique(np.concatenate([linear, logspaced.clip(0, len(fpr) - 1), [0, len(fpr) - 1]]))
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
        "tpr": float((scores[pos] > thr).mean()) if len(pos) else None,
        "fpr": float((scores[rest_neg] > thr).mean()) if len(rest_neg) else None,
        "n_eval_members": int(len(pos)),
        "n_eval_nonmembers": int(len(rest_neg)),
    }
    if n_cal * alpha < 1:
        out["note"] = f"{n_cal} calibration non-members cannot resolve an FPR of {alpha:g}; the threshold is their maximum"
    return out


def threshold_at_fpr(reference_scores, alpha: float) -> float:
    """The smallest threshold with at most ``alpha`` of the reference scores strictly above it."""
    ref = np.sort(np.asarray(reference_scores, dtype=np.float64))
    allowed = int(np.floor(alpha * len(ref)))  # how many reference scores may exceed it
    return float(ref[len(ref) - 1 - allowed])
