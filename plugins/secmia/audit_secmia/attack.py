"""SecMI (Duan et al., "Are Diffusion Models Vulnerable to Membership Inference Attacks?", ICML 2023).

Grey-box: it needs the target's noise prediction ``eps(x_t, t)``. For every image, in the target's
model space (pixels, or scaled VAE latents with the caption as text condition):

1. deterministic DDIM inversion from the clean image (index 0) up to index ``t_sec - k`` in steps
   of ``k`` (the first step uses ``eps(x, 0)``), giving ``x_tilde``;
2. one more inversion step ``t_sec - k -> t_sec``, then one denoising step ``t_sec -> t_sec - k``,
   giving ``x_hat``;
3. ``SecMI_stat`` score ``= -sum((x_hat - x_tilde)^2)`` (higher = more member-like: the model
   reconstructs its training images' deterministic trajectories more faithfully).

The residual map ``|x_hat - x_tilde|`` is returned too, so ``scorer: classifier`` trains the core's
ResNet scorer on it: that is ``SecMI_NNs``.

Cost: ``(t_sec - k) / k + 2 = t_sec / k + 1`` U-Net evaluations per image (11 with the defaults),
all rows of a batch in one forward pass per step. All DDIM math comes from ``audit_core.base.ddim``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from audit_core import ddim, Attack, AttackOutput, AttackParams, Batch, flat_sum, NOISE


#: the official ReDiffuse scripts' setting for SecMI (github lijingwei0502/diffusion_mia, attack_num 1):
#: one DDIM step of ``interval`` up from the clean image and one back (DDIM: 200, SD: 50)
PRESETS: dict[str, dict[str, Any]] = {"paper-ddim": {"t_sec": 200, "k": 200}, "paper-sd": {"t_sec": 50, "k": 50}}


class SecMIParams(AttackParams):
    """``attacks[].params`` of ``plugin: secmia`` (unknown keys are errors)."""

    preset: Literal["paper-ddim", "paper-sd"] | None = Field(
        None, description="the official ReDiffuse scripts' setting (paper-ddim | paper-sd); your own values win"
    )
    t_sec: int = Field(100, description="the step whose reconstruction error is measured (0 < t_sec < T)")
    k: int = Field(10, description="the DDIM interval; must divide t_sec")


class SecMIA(Attack):
    name = "secmia"
    requires = frozenset({NOISE})  # grey-box: refused on variation-only targets
    Params = SecMIParams
    presets = PRESETS
    residual_maps = True  # |x_hat - x_tilde|: `scorer: classifier` gives SecMI_NNs

    def check(self) -> None:
        p = self.params
        self.check_t(p.t_sec, "t_sec")
        self.check_divides(p.t_sec, p.k, "t_sec", "k")

    def nfe_per_image(self) -> int:
        return self.params.t_sec // self.params.k + 1

    def describe(self) -> dict[str, Any]:
        return {
            "statistic": "SecMI_stat: -sum((x_hat - x_tilde)^2) at t_sec",
            "space": self.target.kind,
            "expected_nfe_per_image": self.nfe_per_image(),
        }

    def score(self, batch: Batch) -> AttackOutput:
        p, target = self.params, self.target
        ac = target.alphas_cumprod
        eps = target.eps_fn(batch.captions)  # eps(z, t) with the batch's text condition
        z0 = target.encode(batch.images, batch.captions)  # model space
        x_tilde = ddim.invert(eps, z0, p.t_sec - p.k, p.k, ac)  # 0 -> k -> ... -> t_sec - k
        x_next = ddim.step(eps, x_tilde, p.t_sec - p.k, p.t_sec, ac)  # one more inversion step
        x_hat = ddim.step(eps, x_next, p.t_sec, p.t_sec - p.k, ac)  # and one denoising step back
        diff = x_hat - x_tilde
        return AttackOutput(scores=-flat_sum(diff.square()), residuals=diff.abs())
