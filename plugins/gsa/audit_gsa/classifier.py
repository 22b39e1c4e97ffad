"""The classifier GSA feeds its gradient features to: an l2-regularised logistic regression fitted
on the run's labelled calibration split (never on the images it then scores).

Features are the log of the per-layer gradient norms (norms span orders of magnitude across
layers; a linear model wants them on one scale), standardised with the calibration split's mean
and standard deviation. The fit minimises ``sum_i log(1 + exp(-y_i (w . z_i + b))) + l2/2 |w|^2``
(scikit-learn's ``LogisticRegression`` objective with ``C = 1 / l2``; the bias is not penalised)
by Newton's method in float64: deterministic, no learning rate, no random start. The score of an
image is the logit ``w . z + b`` (higher = member).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: norms below this are treated as this (a layer the loss does not reach has norm 0)
FLOOR = 1e-30


class LogisticModel(BaseModel):
    """A fitted classifier (``params.classifier``): JSON-able, so it travels in the params, lands in
    results.json and can be handed to another run (e.g. one fitted on a shadow model)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    mean: list[float] = Field(description="per-feature mean of the log norms on the calibration split")
    scale: list[float] = Field(description="per-feature standard deviation (1 where it was 0)")
    weights: list[float] = Field(description="logistic-regression weights on the standardised features")
    bias: float = Field(description="logistic-regression intercept")


def log_features(norms: np.ndarray) -> np.ndarray:
    """``[N, L]`` gradient norms -> their natural log (floored at :data:`FLOOR`)."""
    return np.log(np.maximum(np.asarray(norms, dtype=np.float64), FLOOR))


def fit_logistic(norms: np.ndarray, labels: np.ndarray, l2: float = 1.0, max_iter: int = 100) -> LogisticModel:
    """Fit on ``norms [N, L]`` and ``labels [N]`` (1 = member); see the module docstring."""
    x = log_features(norms)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
    if y.min() == y.max():
        raise ValueError("the calibration split holds only one class: a classifier cannot be fitted")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])  # last column: the bias
    n_feat = z.shape[1]
    penalty = np.full(n_feat, float(l2))
    penalty[-1] = 0.0
    theta = np.zeros(n_feat)
    sign = 2.0 * y - 1.0
    for _ in range(max_iter):
        margin = sign * (z @ theta)
        p = 0.5 * (1.0 + np.tanh(-0.5 * margin))  # sigmoid(-margin), overflow-free
        grad = -(z.T @ (sign * p)) + penalty * theta
        w = p * (1.0 - p)
        hess = (z.T * w) @ z + np.diag(penalty) + 1e-12 * np.eye(n_feat)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return LogisticModel(
        mean=[float(v) for v in mean], scale=[float(v) for v in scale],
        weights=[float(v) for v in theta[:-1]], bias=float(theta[-1]),
    )


def logits(model: LogisticModel, norms: np.ndarray) -> np.ndarray:
    """The model's logit for every row of ``norms [N, L]`` (higher = member)."""
    x = log_features(norms)
    z = (x - np.asarray(model.mean)) / np.asarray(model.scale)
    return (z * np.asarray(model.weights)).sum(axis=1) + model.bias  # row by row: the same bits at any batch size
