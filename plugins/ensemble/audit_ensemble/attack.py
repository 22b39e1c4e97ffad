"""The ensemble attack: one score per image from several other attack entries' scores.

``{plugin: ensemble, params: {of: [rediffuse, pia], combiner: logistic | rank-mean}}`` names other
entries of the same run (their ``name``, or their plugin name when unnamed). It queries nothing:
the core scores it after every other entry, from their stored scores (``audit_core.combine``),
fitting it on the run's seeded calibration split (``inference.calibration_fraction`` of the
members and of the non-members, the learned scorer's split). Metrics, ROC, scores.csv's ``split``
column and, in copyright mode, the set-level test use the held-out images only, so the ensemble
is compared with its components on the same images (results.json ``components_on_evaluation``).

Combiners (components' scores are "higher = more member-like"):

- ``logistic``: each component standardised by its mean and standard deviation on the
  calibration rows; an L2-regularised logistic regression of the labels on them (Newton's method,
  penalty ``l2`` on the weights, not the intercept) fitted on the calibration rows; the score is
  the linear predictor ``b + sum_j w_j z_j`` (monotone in the fitted membership probability).
- ``rank-mean``: each component mapped to its mid-rank among the calibration *non-members*
  (``u = (#{ref < s} + #{ref == s} / 2) / n_ref``, in [0, 1]) and the ranks averaged. It uses no
  member label at all (only the reference's distribution) and no weights, so it cannot overfit;
  exact ties of the mean (likely with a small reference) are broken by the mean standardised score
  at a weight of 1e-9.

Cost: nothing of its own; ``nfe_per_image`` / ``queries_per_image`` report the sum of the
components' (already spent by them).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from audit_core.attacks import AttackParams
from audit_core.combine import CombiningAttack

#: weight of the mean standardised score that breaks exact ties of rank-mean
TIE_BREAK = 1e-9


class EnsembleParams(AttackParams):
    """``attacks[].params`` of ``plugin: ensemble`` (unknown keys are errors)."""

    of: list[str] = Field(description="the attack entries to combine (their names; at least two)")
    combiner: Literal["logistic", "rank-mean"] = Field(
        "logistic", description="logistic (fitted weights) or rank-mean (mean rank against the calibration non-members)"
    )
    l2: float = Field(1.0, ge=0, description="logistic: L2 penalty on the standardised weights")


class Ensemble(CombiningAttack):
    name = "ensemble"
    Params = EnsembleParams

    def components(self) -> list[str]:
        return list(self.params.of)

    def describe(self) -> dict[str, Any]:
        return {"combiner": self.params.combiner, "of": self.components(), "statistic": f"{self.params.combiner} of {', '.join(self.components())}"}

    def fit_predict(self, table: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        ref = table[fit & (labels == 0)]
        mean, std = table[fit].mean(axis=0), table[fit].std(axis=0)
        z = (table - mean) / np.where(std > 0, std, 1.0)
        if self.params.combiner == "rank-mean":
            u = np.stack([mid_ranks(table[:, j], ref[:, j]) for j in range(table.shape[1])], axis=1)
            return u.mean(axis=1) + TIE_BREAK * z.mean(axis=1), {
                "combiner": "rank-mean",
                "n_reference_ranks": int(len(ref)),
            }
        w, b, iters = fit_logistic(z[fit], labels[fit].astype(np.float64), self.params.l2)
        return z @ w + b, {
            "combiner": "logistic",
            "weights": {n: round(float(v), 6) for n, v in zip(self.components(), w)},
            "intercept": round(float(b), 6),
            "l2": self.params.l2,
            "newton_iterations": iters,
            "standardisation": {n: [float(m), float(s)] for n, m, s in zip(self.components(), mean, std)},
        }


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
