"""The ensemble attack: one score per image from several other attack entries' scores.

``{plugin: ensemble, params: {of: [rediffuse, pia], combiner: logistic | rank-mean | auto}}`` names
other entries of the same run (their ``name``, or their plugin name when unnamed). It queries
nothing: the core scores it after every other entry, from their stored scores
(``audit_core.stats.combine``), fitting it on the run's seeded calibration split
(``inference.calibration_fraction`` of the members and of the non-members, the learned scorer's
split). Metrics, ROC, scores.csv's ``split`` column and, in copyright mode, the set-level test use
the held-out images only, so the ensemble is compared with its components on the same images
(results.json ``components_on_evaluation``).

Components' scores are "higher = more member-like". Before any combiner sees them, each component
goes through ``transform`` (fitted on the calibration rows only):

- ``auto`` (default): a component whose calibration scores all have one sign is put on a log
  scale (``-log(-s)`` for negated distances and losses, ``log(s)`` for positive scores; both
  monotone increasing, so the component's own ranking is unchanged); a mixed-sign component is
  left as it is. Why: the attacks' scores are negated distances, which are heavy-tailed (on the
  demo, PIA's lowest score is 25x its median): standardised linearly, a few extreme images set the
  mean and the standard deviation and dominate the fit. Held-out magnitudes below
  ``LOG_FLOOR`` x the calibration median (or of the other sign) are clamped to it.
- ``none``: the raw scores.

Combiners:

- ``logistic`` (default): each (transformed) component standardised by its mean and standard
  deviation on the calibration rows; an L2-regularised logistic regression of the labels on them
  (Newton's method, penalty ``l2`` on the weights, not the intercept) fitted on the calibration
  rows; the score is the linear predictor ``b + sum_j w_j z_j`` (monotone in the fitted
  membership probability).
- ``rank-mean``: each component mapped to its mid-rank among the calibration *non-members*
  (``u = (#{ref < s} + #{ref == s} / 2) / n_ref``, in [0, 1]) and the ranks averaged. It uses no
  member label at all (only the reference's distribution) and no weights, so it cannot overfit,
  but it weights a weak attack as much as a strong one; exact ties of the mean (likely with a
  small reference) are broken by the mean standardised score at a weight of 1e-9.
- ``auto``: chooses, by ``folds``-fold cross-validation on the calibration rows only, among
  ``logistic``, ``rank-mean`` and each component alone (its own score, ``"<name> alone"``), the one
  with the highest mean held-out-fold AUC (ties: that order), then refits it on all calibration
  rows. The folds are deterministic (the calibration rows of each class dealt in record order), so no seed is needed.
  It cannot be worse than the best single component *by the cross-validation's estimate*; with a
  small calibration split that estimate is noisy (see plugins/rediffuse/README.md).

Cost: nothing of its own; ``nfe_per_image`` / ``queries_per_image`` report the sum of the
components' (already spent by them).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from audit_core import metrics, AttackParams, CombiningAttack

#: weight of the mean standardised score that breaks exact ties of rank-mean
TIE_BREAK = 1e-9
#: the smallest magnitude the log transform takes, relative to the calibration median magnitude
LOG_FLOOR = 1e-6
#: ``combiner: auto``'s candidates that combine (then each component alone), in tie-break order
AUTO_COMBINERS = ("logistic", "rank-mean")


class EnsembleParams(AttackParams):
    """``attacks[].params`` of ``plugin: ensemble`` (unknown keys are errors)."""

    of: list[str] = Field(description="the attack entries to combine (their names; at least two)")
    combiner: Literal["logistic", "rank-mean", "auto"] = Field(
        "logistic",
        description="logistic (fitted weights), rank-mean (mean rank against the calibration non-members) "
        "or auto (the better of those and each component alone, by cross-validation on the calibration rows)",
    )
    transform: Literal["auto", "none"] = Field(
        "auto", description="auto: log scale for a component whose calibration scores have one sign; none: raw scores"
    )
    l2: float = Field(1.0, ge=0, description="logistic: L2 penalty on the standardised weights")
    folds: int = Field(5, ge=2, description="auto: cross-validation folds (fewer when a class has fewer calibration rows)")


class Ensemble(CombiningAttack):
    name = "ensemble"
    Params = EnsembleParams

    def components(self) -> list[str]:
        return list(self.params.of)

    def describe(self) -> dict[str, Any]:
        return {"combiner": self.params.combiner, "of": self.components(), "statistic": f"{self.params.combiner} of {', '.join(self.components())}"}

    def fit_predict(self, table: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if self.params.combiner != "auto":
            return self._combine(self.params.combiner, table, labels, fit)
        # candidates: the combiners, then each component alone (column j) -- keyed apart, so an
        # entry named "logistic" cannot be mistaken for the combiner
        candidates = [(c, None) for c in AUTO_COMBINERS] + [(f"{n} alone", j) for j, n in enumerate(self.components())]
        folds = cv_folds(labels, fit, self.params.folds)
        k = int(folds.max()) + 1
        if k < 2:  # a class with a single calibration row: nothing to cross-validate on
            scores, info = self._combine("logistic", table, labels, fit)
            return scores, {**info, "combiner": "auto", "chosen": "logistic", "cv_folds": 0}
        cv = {}
        for name, col in candidates:
            aucs = []
            for f in range(k):
                train, test = fit & (folds != f), fit & (folds == f)
                s = table[:, col] if col is not None else self._combine(name, table, labels, train)[0]
                aucs.append(metrics.point_metrics(s[test], labels[test])["auc"])
            cv[name] = float(np.mean(aucs))
        # the highest mean fold AUC; ties go to the earlier candidate
        order = [name for name, _ in candidates]
        chosen, col = max(candidates, key=lambda c: (cv[c[0]], -order.index(c[0])))
        if col is None:
            scores, info = self._combine(chosen, table, labels, fit)
        else:
            scores, info = table[:, col].astype(np.float64), {"component": self.components()[col]}
        return scores, {
            **info,
            "combiner": "auto",
            "chosen": chosen,
            "cv_folds": k,
            "cv_auc": {c: round(v, 6) for c, v in cv.items()},
        }

    def _combine(self, how: str, table: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Fit the combiner ``how`` (``logistic`` or ``rank-mean``) on the rows ``fit``; score every row."""
        x, kinds = transform(table, fit, self.params.transform)
        names = self.components()
        ref = x[fit & (labels == 0)]
        mean, std = x[fit].mean(axis=0), x[fit].std(axis=0)
        z = (x - mean) / np.where(std > 0, std, 1.0)
        scales = dict(zip(names, kinds))
        if how == "rank-mean":
            u = np.stack([mid_ranks(x[:, j], ref[:, j]) for j in range(x.shape[1])], axis=1)
            return u.mean(axis=1) + TIE_BREAK * z.mean(axis=1), {
                "combiner": "rank-mean",
                "transform": scales,
                "n_reference_ranks": int(len(ref)),
            }
        w, b, iters = fit_logistic(z[fit], labels[fit].astype(np.float64), self.params.l2)
        return z @ w + b, {
            "combiner": "logistic",
            "transform": scales,
            "weights": {n: round(float(v), 6) for n, v in zip(names, w)},
            "intercept": round(float(b), 6),
            "l2": self.params.l2,
            "newton_iterations": iters,
            "standardisation": {n: [float(m), float(s)] for n, m, s in zip(names, mean, std)},
        }


def transform(table: np.ndarray, fit: np.ndarray, how: str) -> tuple[np.ndarray, list[str]]:
    """Each column of ``table`` ``[N, m]`` on the scale ``how`` chooses from its ``fit`` rows:
    ``(transformed table, per column "-log(-s)" | "log(s)" | "identity")``. Monotone increasing
    in each column (non-strictly where clamped at the floor)."""
    out = np.array(table, dtype=np.float64)
    kinds = []
    for j in range(out.shape[1]):
        cal = out[fit, j]
        sign = 0.0
        if how == "auto" and len(cal) and (cal < 0).all():
            sign = -1.0  # negated distances and losses: -log(distance)
        elif how == "auto" and len(cal) and (cal > 0).all():
            sign = 1.0
        if sign == 0.0:
            kinds.append("identity")
            continue
        # held-out magnitudes below the floor (or of the other sign) are clamped to it
        floor = LOG_FLOOR * float(np.median(sign * cal))
        out[:, j] = sign * np.log(np.maximum(sign * out[:, j], floor))
        kinds.append("-log(-s)" if sign < 0 else "log(s)")
    return out, kinds


def cv_folds(labels: np.ndarray, fit: np.ndarray, folds: int) -> np.ndarray:
    """Fold number of every ``fit`` row (-1 elsewhere): each class's calibration rows dealt in
    record order to ``min(folds, smallest class)`` folds, so every fold holds both classes."""
    out = np.full(len(labels), -1, dtype=np.int64)
    rows = [np.flatnonzero(fit & (labels == c)) for c in (0, 1)]
    k = min(folds, *(len(r) for r in rows))
    if k < 2:
        out[fit] = 0
        return out
    for r in rows:
        out[r] = np.arange(len(r)) % k
    return out


def mid_ranks(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(#{reference < s} + #{reference == s} / 2) / n_ref`` for every score ``s``."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    if len(ref) == 0:
        raise ValueError("rank-mean needs calibration non-members")
    below = np.searchsorted(ref, scores, side="left")
    at_or_below = np.searchsorted(ref, scores, side="right")
    return (below + at_or_below) / (2.0 * len(ref))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 100) -> tuple[np.ndarray, float, int]:
    """L2-regularised logistic regression by Newton's method: ``(weights, intercept, iterations)``.
    ``x`` ``[n, m]``, ``y`` in {0, 1}; the intercept is not penalised. Deterministic."""
    n, m = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(m + 1, float(l2))
    penalty[-1] = 0.0
    theta = np.zeros(m + 1)
    it = 0
    for it in range(1, iterations + 1):
        p = 1.0 / (1.0 + np.exp(-np.clip(xa @ theta, -50, 50)))
        grad = xa.T @ (p - y) + penalty * theta
        hess = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(penalty) + 1e-9 * np.eye(m + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:-1], float(theta[-1]), it
