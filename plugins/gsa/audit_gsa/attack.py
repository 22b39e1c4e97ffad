"""The gradient subspace attack GSA (Pang, Wang, Zhang, Xu, Zhang, "White-box Membership Inference
Attacks against Diffusion Models", PoPETs 2025; official code github py85252876/GSA).

White-box: it needs the gradients of the denoising loss with respect to the model's parameters
(the target capability ``GRADIENTS``: the ddim, stable-diffusion and dit targets offer it; http
and torch-callable do not, and are refused before any query). For every image, in the target's
model space:

1. ``K`` timesteps, by default the paper's ``t_j = j T/K - 1`` for ``j = 1..K`` (K = 10: 99, 199,
   ..., 999), and one fresh noise ``z_j`` per timestep, seeded per image and draw
   (``batch.seed_matrix(K)``);
2. ``x_j = sqrt(abar[t_j]) x + sqrt(1 - abar[t_j]) z_j`` and the loss
   ``l_j = mean((eps(x_j, t_j) - z_j)^2)``;
3. the features, one per parameter tensor ("layer") of the noise predictor:

   - **GSA1**: the l2 norm of the gradient of ``mean_j l_j`` (the K timesteps' loss together);
   - **GSA2**: the mean over j of the l2 norms of the gradients of each ``l_j``;

4. the score: the logit of a logistic regression on the log features (:mod:`audit_gsa.classifier`),
   fitted on the run's labelled calibration split: the runner scores those images first, calls
   :meth:`GSA.calibrated_params` with their features and labels, and scores the other images with
   the fitted classifier; metrics are on those other images only. A ``classifier`` given in the
   params (say, fitted on a shadow model's run) is used as it is, with no calibration. Before the
   fit (the calibration images themselves) the score is minus the log of the total gradient norm.

Cost: K NFEs per image (K forward rows and their backward passes: one backward over the K rows for
GSA1, K one-row backwards for GSA2). Gradients are taken one image (GSA1) or one row (GSA2) at a
time by the core (``Target.param_grad_norms``), so memory holds one sample's activations and one
gradient of the model whatever the batch size.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from audit_core import ddim, seeding
from audit_core import Attack, AttackOutput, AttackParams, Batch
from audit_core import ConfigError
from audit_core import GRADIENTS

from .classifier import LogisticModel, fit_logistic, logits

#: the official scripts' setting: GSA1 and GSA2 with sampling_frequency K = 10
PRESETS: dict[str, dict[str, Any]] = {
    "paper-gsa1": {"variant": "gsa1", "timesteps": 10, "ts": None},
    "paper-gsa2": {"variant": "gsa2", "timesteps": 10, "ts": None},
}


def paper_timesteps(T: int, k: int) -> list[int]:
    """The official ``[x - 1 for x in range(T // k, T + 1, T // k)]`` (K = 10, T = 1000: 99 .. 999)."""
    step = T // k
    return [x - 1 for x in range(step, T + 1, step)]


class GSAParams(AttackParams):
    """``attacks[].params`` of ``plugin: gsa`` (unknown keys are errors)."""

    preset: Literal["paper-gsa1", "paper-gsa2"] | None = Field(
        None, description="the official code's settings (K = 10 timesteps); your own values win"
    )
    variant: Literal["gsa1", "gsa2"] = Field(
        "gsa1", description="gsa1: norms of the gradient of the mean loss over the K timesteps; gsa2: mean of the per-timestep norms"
    )
    timesteps: int = Field(10, description="K, the number of timesteps: t_j = j*(T//K) - 1 (the official sampling_frequency)")
    ts: list[int] | None = Field(None, description="explicit timestep indices (0 <= t < T) instead of `timesteps`")
    l2: float = Field(1.0, description="the logistic regression's l2 penalty (scikit-learn's 1/C)")
    classifier: LogisticModel | None = Field(
        None, description="a fitted classifier; None: fitted on the run's calibration split (set by the run)"
    )


class GSA(Attack):
    name = "gsa"
    requires = frozenset({GRADIENTS})  # white-box: refused (exit 2) on targets without parameter gradients
    Params = GSAParams
    presets = PRESETS

    def timesteps(self) -> list[int]:
        p = self.params
        return list(p.ts) if p.ts is not None else paper_timesteps(self.target.num_train_timesteps, p.timesteps)

    @property
    def expected_nfe_per_image(self) -> int:
        return len(self.timesteps())

    def check(self) -> None:
        p, name, T = self.params, self.context.name, self.target.num_train_timesteps
        if p.ts is None and not 1 <= p.timesteps <= T:
            raise ConfigError(f"attack {name!r}: timesteps={p.timesteps} must be between 1 and T={T}")
        if p.ts is not None:
            if not p.ts:
                raise ConfigError(f"attack {name!r}: ts is empty; give at least one timestep index")
            bad = [t for t in p.ts if not 0 <= t < T]
            if bad:
                raise ConfigError(f"attack {name!r}: ts={bad[0]} is outside 0..{T - 1} (T={T})")
        if not p.l2 > 0:
            raise ConfigError(f"attack {name!r}: l2={p.l2} must be > 0")
        if p.classifier is not None:
            layers = len(self.target.param_grad_names())
            sizes = {len(p.classifier.mean), len(p.classifier.scale), len(p.classifier.weights)}
            if sizes != {layers}:
                raise ConfigError(
                    f"attack {name!r}: classifier has {sorted(sizes)} features but target {self.target.name!r} "
                    f"has {layers} parameter tensors; fit it on this model"
                )

    def describe(self) -> dict[str, Any]:
        ts = self.timesteps()
        return {
            "variant": self.params.variant,
            "timesteps": ts,
            "features": len(self.target.param_grad_names()),
            "statistic": (
                "logit of a logistic regression (fitted on the calibration split) on the log of the per-layer l2 norms "
                + ("of the gradient of the mean loss over the timesteps" if self.params.variant == "gsa1"
                   else "of the per-timestep loss gradients, averaged over the timesteps")
            ),
            "space": self.target.kind,
            "expected_nfe_per_image": len(ts),
        }

    # ------------------------------------------------------------------ calibration
    def needs_calibration(self) -> bool:
        """Without a ``classifier`` the runner scores the calibration split first and fits one."""
        return self.params.classifier is None

    def calibrated_params(self, scores, labels, features=None) -> dict[str, Any]:
        """The classifier fitted on the calibration images' features (their gradient norms) and
        labels; nothing else of the run is seen."""
        if features is None:
            raise ConfigError(
                f"attack {self.context.name!r}: the calibration images' gradient features are missing from the run "
                f"directory (written by an older version?); rerun without --resume"
            )
        model = fit_logistic(np.asarray(features), np.asarray(labels), self.params.l2)
        return {"classifier": model.model_dump()}

    # ------------------------------------------------------------------ scoring
    def features(self, batch: Batch) -> torch.Tensor:
        """``[B, L]``: the per-layer gradient norms of every image (see the module docstring)."""
        p, target = self.params, self.target
        ts = self.timesteps()
        k, b = len(ts), len(batch)
        z0 = target.encode(batch.images, batch.captions).repeat_interleave(k, dim=0)  # rows i*k .. i*k+k-1: image i
        noise = seeding.randn(z0.shape[1:], batch.seed_matrix(k), device=z0.device, dtype=z0.dtype)
        steps = ts * b
        abar = target.alphas_cumprod[torch.tensor(steps)].to(z0.device, z0.dtype).view(-1, *[1] * (z0.ndim - 1))
        z_t = ddim.q_sample(z0, noise, abar)
        captions = batch.repeat_captions(k)
        if p.variant == "gsa1":
            return target.param_grad_norms(z_t, steps, noise, captions, rows_per_sample=k)
        norms = target.param_grad_norms(z_t, steps, noise, captions, rows_per_sample=1).reshape(b, k, -1)
        return sum(norms[:, j] for j in range(k)) / k  # summed in timestep order: the same bits at any batch size

    def score(self, batch: Batch) -> AttackOutput:
        norms = self.features(batch)
        if self.params.classifier is None:  # the calibration images: before the fit
            scores = -0.5 * torch.log(norms.double().square().sum(dim=1).clamp_min(1e-300))
        else:
            scores = torch.from_numpy(logits(self.params.classifier, norms.double().numpy()))
        return AttackOutput(scores=scores, features=norms.double())
