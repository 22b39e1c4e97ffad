"""The naive loss attack (Matsumoto et al., "Membership Inference Attacks against Diffusion
Models", IEEE SPW 2023; Hu & Pang 2023).

Grey-box: it needs the target's noise prediction ``eps(x_t, t)``. For every image, in the target's
model space (pixels, or scaled VAE latents with the caption as text condition):

1. fresh noise ``z ~ N(0, I)``, seeded per image and draw (``batch.seed_matrix``), so the score does
   not depend on batching, resumption or workers;
2. ``x_t = sqrt(abar[t]) x + sqrt(1 - abar[t]) z``;
3. score ``= -sum((eps(x_t, t) - z)^2)``, the training loss at step t, negated (members have a
   lower loss). With ``draws: n`` the loss is averaged over n independent noises.

The residual map ``|eps(x_t, t) - z|`` (averaged over the draws) is returned too, so
``scorer: classifier`` trains the core's ResNet scorer on it, as the official DDIM script does for
every attack.

Cost: ``draws`` U-Net evaluations per image (all draws of a batch in one forward pass).
All DDIM math comes from ``audit_core.base.ddim``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from audit_core import ddim, seeding, Attack, AttackOutput, AttackParams, Batch, flat_sum, mean_over, ConfigError, NOISE


#: the official ReDiffuse scripts' setting for the naive loss (github lijingwei0502/diffusion_mia):
#: t = interval (DDIM 200, SD 50), one noise draw
PRESETS: dict[str, dict[str, Any]] = {"paper-ddim": {"t": 200, "draws": 1}, "paper-sd": {"t": 50, "draws": 1}}


class NaiveLossParams(AttackParams):
    """``attacks[].params`` of ``plugin: naive-loss`` (unknown keys are errors)."""

    preset: Literal["paper-ddim", "paper-sd"] | None = Field(
        None, description="the official ReDiffuse scripts' setting (paper-ddim | paper-sd); your own values win"
    )
    t: int = Field(200, description="the step the loss is measured at (0 < t < T)")
    draws: int = Field(1, description="independent noise draws averaged per image (draws >= 1); NFE = draws")


class NaiveLoss(Attack):
    name = "naive-loss"
    requires = frozenset({NOISE})  # grey-box: refused on variation-only targets
    Params = NaiveLossParams
    presets = PRESETS
    residual_maps = True  # |eps(x_t, t) - z|: `scorer: classifier` learns from it

    def check(self) -> None:
        p = self.params
        self.check_t(p.t, "t")
        if p.draws < 1:
            raise ConfigError(f"attack {self.context.name!r}: draws={p.draws} must be >= 1")

    def rows_per_image(self) -> int:
        """``draws`` noised copies of each image at once (what the core's memory check counts;
        grey-box: no variation queries)."""
        return self.params.draws

    def describe(self) -> dict[str, Any]:
        return {
            "statistic": "-mean over draws of sum((eps(x_t, t) - z)^2)",
            "space": self.target.kind,
            "expected_nfe_per_image": self.params.draws,
        }

    def score(self, batch: Batch) -> AttackOutput:
        p, target = self.params, self.target
        n = p.draws
        # model space, encoded once per image, then repeated image-major (rows i*n .. i*n+n-1: image i)
        z0 = target.encode(batch.images, batch.captions).repeat_interleave(n, dim=0)
        captions = batch.repeat_captions(n)
        # draw d of image i uses batch.seeds(d)[i] (seed_matrix is the image-major stack of them)
        z = seeding.randn(z0.shape[1:], batch.seed_matrix(n), device=z0.device, dtype=z0.dtype)
        x_t = ddim.q_sample(z0, z, ddim.abar_at(target.alphas_cumprod, p.t))
        err = target.eps(x_t, p.t, captions) - z
        loss = flat_sum(err.square())
        return AttackOutput(scores=-mean_over(loss, n), residuals=mean_over(err.abs(), n))
