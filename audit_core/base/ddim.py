"""The DDIM math, in one place. Targets and attacks call these; none re-implements them.

Conventions (docs/writing-plugins.md, "Utilities"): ``abar`` is the target's ``alphas_cumprod``
with index 0 the first noising step; a clean image is the state at index 0; for an index below 0,
abar = 1.
``eps_fn(x, t)`` is a noise predictor taking a batch and an integer index.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def abar_at(alphas_cumprod: torch.Tensor, t: int) -> float:
    """abar[t] as a Python float, with abar = 1 for t < 0 (the clean image)."""
    if t < 0:
        return 1.0
    return float(alphas_cumprod[int(t)])


def q_sample(x0: torch.Tensor, noise: torch.Tensor, abar_t: float) -> torch.Tensor:
    """Forward diffusion: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
    return (abar_t**0.5) * x0 + ((1.0 - abar_t) ** 0.5) * noise


def predict_x0(x_t: torch.Tensor, e: torch.Tensor, abar_t: float) -> torch.Tensor:
    """``x0_hat = (x_t - sqrt(1 - abar_t) e) / sqrt(abar_t)``."""
    return (x_t - ((1.0 - abar_t) ** 0.5) * e) / (abar_t**0.5)


def ddim_step(x_t: torch.Tensor, e: torch.Tensor, abar_t: float, abar_s: float) -> torch.Tensor:
    """One deterministic (eta = 0) DDIM step from index t to index s, either direction."""
    x0_hat = predict_x0(x_t, e, abar_t)
    return (abar_s**0.5) * x0_hat + ((1.0 - abar_s) ** 0.5) * e


def step(eps_fn: EpsFn, x_t: torch.Tensor, t: int, s: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Evaluate ``eps_fn(x_t, t)`` once and take the DDIM step from t to s (1 NFE)."""
    e = eps_fn(x_t, t)
    return ddim_step(x_t, e, abar_at(alphas_cumprod, t), abar_at(alphas_cumprod, s))


def denoise(eps_fn: EpsFn, x_t: torch.Tensor, t: int, k: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM from index t down to index 0 with interval k: t/k NFEs
    (t, t-k, ..., k -> 0)."""
    check_interval(t, k)
    x = x_t
    for cur in range(t, 0, -k):
        x = step(eps_fn, x, cur, cur - k, alphas_cumprod)
    return x


def invert(eps_fn: EpsFn, x0: torch.Tensor, t: int, k: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion from index 0 up to index t with interval k: t/k NFEs
    (0 -> k -> ... -> t; the first step uses eps(x, 0) on the clean image)."""
    check_interval(t, k)
    x = x0
    for cur in range(0, t, k):
        x = step(eps_fn, x, cur, cur + k, alphas_cumprod)
    return x


def tk_problem(
    t: int, k: int | None = None, T: int | None = None, t_label: str = "t", k_label: str = "k"
) -> str | None:
    """Why a noising step ``t`` and DDIM interval ``k`` cannot be used, or None when they can.

    The one t/k rule of the project (attacks' ``check``, ``Target.variation``, the HTTP server and
    ``denoise``/``invert`` all call it): ``t`` is an integer with ``0 < t < T`` (with T unknown:
    ``t >= 0``); ``k`` (when given) is a positive integer dividing ``t``, so that DDIM takes t/k
    steps. The labels name the params in the message (e.g. ``t_sec``, ``steps``)."""
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        return f"{t_label}={t!r} must be an integer"
    if T is not None and not 0 < t < T:
        return f"{t_label}={t} must satisfy 0 < {t_label} < T={T}"
    if t < 0:
        return f"{t_label}={t} must not be negative"
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        return f"{k_label}={k!r} must be an integer"
    if k <= 0 or t % k != 0:
        return f"{k_label}={k} must be positive and divide {t_label}={t}"
    return None


def check_tk(t: int, k: int | None = None, T: int | None = None, t_label: str = "t", k_label: str = "k") -> None:
    """:func:`tk_problem` as a ``ValueError``."""
    problem = tk_problem(t, k, T, t_label, k_label)
    if problem:
        raise ValueError(problem)


def check_interval(t: int, k: int) -> None:
    """``k`` positive and dividing ``t >= 0`` (:func:`check_tk` without T)."""
    check_tk(t, k)


def variation(
    eps_fn: EpsFn, x0: torch.Tensor, noise: torch.Tensor, t: int, k: int, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """The variation API V(x, t, k) given the noise: noise x0 to index t, then DDIM back to 0."""
    x_t = q_sample(x0, noise, abar_at(alphas_cumprod, t))
    return denoise(eps_fn, x_t, t, k, alphas_cumprod)
