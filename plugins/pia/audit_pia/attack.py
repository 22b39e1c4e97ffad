"""PIA / PIAN (Kong et al., "An Efficient Membership Inference Attack for the Diffusion Model by
Proximal Initialization", ICLR 2024).

Grey-box: it needs the target's noise prediction ``eps(x_t, t)``. For every image, in the target's
model space (pixels, or scaled VAE latents with the caption as text condition):

1. ``e0 = eps(x, 0)``, the model's own noise estimate at the clean image (the "proximal
   initialisation"); ``variant: pian`` normalises it per image first,
   ``e0 <- e0 / mean(|e0|) * sqrt(2 / pi)`` (so its mean absolute value is a standard normal's);
2. ``x_t = sqrt(abar[t]) x + sqrt(1 - abar[t]) e0`` (deterministic: no random noise at all);
3. score ``= -sum(|eps(x_t, t) - e0|^p)`` (higher = more member-like).

The residual map ``|eps(x_t, t) - e0|`` (per pixel, or per latent element) is returned too, so
``scorer: classifier`` trains the core's ResNet scorer on it, as the official DDIM script does for
every attack.

Defaults: ``t = 200``, ``p = 4``; ``t = 500`` on latent targets (Stable Diffusion), supplied by
:meth:`PIA.defaults_for` (a ``t`` in audit.yaml wins). Cost: 2 U-Net evaluations per image.
All DDIM math comes from ``audit_core.base.ddim``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from audit_core import ddim, Attack, AttackOutput, AttackParams, Batch, flat_sum, ConfigError, NOISE, Target

#: mean |N(0, 1)| = sqrt(2 / pi): PIAN rescales e0 to this mean absolute value
HALF_NORMAL_MEAN = math.sqrt(2.0 / math.pi)
#: t default on latent targets (the paper's Stable Diffusion setting)
LATENT_T = 500


#: the official ReDiffuse scripts' setting for PIA (github lijingwei0502/diffusion_mia): t = interval
#: (DDIM 200, SD 50); the SD script's threshold score is the squared error (p = 2)
PRESETS: dict[str, dict[str, Any]] = {"paper-ddim": {"t": 200}, "paper-sd": {"t": 50, "p": 2.0}}


class PIAParams(AttackParams):
    """``attacks[].params`` of ``plugin: pia`` (unknown keys are errors)."""

    preset: Literal["paper-ddim", "paper-sd"] | None = Field(
        None, description="the official ReDiffuse scripts' setting (paper-ddim | paper-sd); your own values win"
    )
    variant: Literal["pia", "pian"] = Field("pia", description="pia, or pian (normalised proximal noise)")
    t: int = Field(200, description="the step the image is noised to with its own e0 (0 < t < T); 500 on latent targets")
    p: float = Field(4.0, description="the exponent of the l_p error (p > 0)")


class PIA(Attack):
    name = "pia"
    requires = frozenset({NOISE})  # grey-box: refused on variation-only targets
    Params = PIAParams
    presets = PRESETS
    residual_maps = True  # |eps(x_t, t) - e0|: `scorer: classifier` learns from it

    @classmethod
    def defaults_for(cls, target: Target) -> dict[str, Any]:
        return {"t": LATENT_T} if target.kind == "latent" else {}

    def check(self) -> None:
        p = self.params
        self.check_t(p.t, "t")
        if not (p.p > 0 and math.isfinite(p.p)):
            raise ConfigError(f"attack {self.context.name!r}: p={p.p} must be a finite number > 0")

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.params.variant,
            "statistic": f"-sum(|eps(x_t, t) - e0|^p) with {'normalised ' if self.params.variant == 'pian' else ''}e0 = eps(x, 0)",
            "space": self.target.kind,
            "expected_nfe_per_image": 2,
        }

    def score(self, batch: Batch) -> AttackOutput:
        p, target = self.params, self.target
        eps = target.eps_fn(batch.captions)  # eps(z, t) with the batch's text condition
        z0 = target.encode(batch.images, batch.captions)  # model space
        e0 = eps(z0, 0)
        if p.variant == "pian":
            scale = e0.abs().mean(dim=tuple(range(1, e0.ndim)), keepdim=True).clamp_min(1e-12)
            e0 = e0 / scale * HALF_NORMAL_MEAN
        x_t = ddim.q_sample(z0, e0, ddim.abar_at(target.alphas_cumprod, p.t))
        err = (eps(x_t, p.t) - e0).abs()
        return AttackOutput(scores=-flat_sum(err.pow(p.p)), residuals=err)
