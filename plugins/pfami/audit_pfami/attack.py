"""PFAMI (Fu, Wang, Gao, Liu, Li, Jiang, "Probabilistic Fluctuation based Membership Inference
Attack for Diffusion Models", ICLR 2024), the metric variant (PFAMI_Met).

Grey-box: it needs the target's noise prediction ``eps(x_t, t)``. A training image sits at a
local maximum of the model's likelihood, so slightly perturbed copies of it (its "neighbours")
have a clearly higher diffusion loss; a non-member's neighbours do not. For every image:

1. ``perturbations`` neighbours: the centre crop of side ``int(side * s)`` resized back
   (bilinear) for strengths ``s = linspace(crop[0], crop[1], perturbations)``, made from the
   image in [-1, 1] and then encoded to the target's model space like the image itself;
2. for the image (version 0) and each neighbour (version v) at every step ``t`` of ``ts``: the
   diffusion loss ``L_v(t) = mean((eps(x_t, t) - z)^2)`` with ``x_t = q_sample(x_v, z, abar[t])``
   and fresh noise ``z`` (version v, step j: draw ``v * len(ts) + j`` of the image's seeds);
3. ``statistic: difference`` (the metric variant of mx-ethan-rao/SimA, default):
   score ``= mean over v >= 1 and t of L_v(t) - mean over t of L_0(t)``;
   ``statistic: relative`` (wjfu99/MIA-Gen's stat attack without its reference model):
   score ``= mean over v >= 1 and t of (L_v(t) - L_0(t)) / L_0(t)``.
   Higher = more member-like (the neighbours' loss rises above the image's own).

Cost: ``(perturbations + 1) * len(ts)`` U-Net evaluations per image (110 with the defaults); one
forward pass per step of ``ts`` for all versions of all images of a batch. All DDIM math comes
from ``audit_core.base.ddim``; the noise from ``audit_core.base.seeding`` (per image, per draw).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from audit_core import ddim, seeding, Attack, AttackOutput, AttackParams, Batch, ConfigError, NOISE

#: the paper's settings (configs/config.yaml of wjfu99/MIA-Gen; hard-coded in mx-ethan-rao/SimA's PFAMI)
PAPER_TS: list[int] = list(range(0, 451, 50))
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"ts": PAPER_TS, "perturbations": 10, "crop": (0.95, 0.70), "statistic": "difference"},
}


class PFAMIParams(AttackParams):
    """``attacks[].params`` of ``plugin: pfami`` (unknown keys are errors)."""

    preset: Literal["paper"] | None = Field(None, description="paper: the paper's settings (the defaults); your own values win")
    ts: list[int] = Field(default_factory=lambda: list(PAPER_TS), description="the steps the loss is measured at (each 0 <= t < T)")
    perturbations: int = Field(10, description="cropped-and-resized neighbours per image (>= 1)")
    crop: tuple[float, float] = Field(
        (0.95, 0.70), description="[first, last] crop strength (kept side fraction, 0 < s <= 1), spaced evenly over the neighbours"
    )
    statistic: Literal["difference", "relative"] = Field(
        "difference", description="difference: neighbours' mean loss minus the image's (SimA's PFAMI); relative: the mean relative rise (MIA-Gen)"
    )


class PFAMI(Attack):
    name = "pfami"
    requires = frozenset({NOISE})  # grey-box: refused on variation-only targets
    Params = PFAMIParams
    presets = PRESETS

    def check(self) -> None:
        p, name = self.params, self.context.name
        if not p.ts:
            raise ConfigError(f"attack {name!r}: ts must list at least one step")
        if len(set(p.ts)) < len(p.ts):
            raise ConfigError(f"attack {name!r}: ts {p.ts} lists a step twice")
        T = self.target.num_train_timesteps
        for t in p.ts:
            problem = ddim.tk_problem(t, None, None, "ts")  # an integer, not negative
            if problem is None and not t < T:
                problem = f"ts step {t} must satisfy 0 <= t < T={T}"
            if problem:
                raise ConfigError(f"attack {name!r}: {problem}")
        if p.perturbations < 1:
            raise ConfigError(f"attack {name!r}: perturbations={p.perturbations} must be >= 1")
        side = self.target.image_size
        for s in p.crop:
            if not (0 < s <= 1 and math.isfinite(s)) or int(side * s) < 1:
                raise ConfigError(f"attack {name!r}: crop strength {s} must satisfy 0 < s <= 1 (and keep at least one pixel of {side})")

    def nfe_per_image(self) -> int:
        return (self.params.perturbations + 1) * len(self.params.ts)

    def strengths(self) -> list[float]:
        """The crop strength of each neighbour: ``linspace(crop[0], crop[1], perturbations)``."""
        (a, b), n = self.params.crop, self.params.perturbations
        return [a] if n == 1 else [a + (b - a) * i / (n - 1) for i in range(n)]

    def describe(self) -> dict[str, Any]:
        p = self.params
        stat = (
            "mean neighbour loss - mean loss of the image" if p.statistic == "difference"
            else "mean of (neighbour loss - loss of the image) / loss of the image"
        )
        return {
            "statistic": f"{stat}, over ts={p.ts} and {p.perturbations} centre crops (strengths {p.crop[0]:g} -> {p.crop[1]:g})",
            "space": self.target.kind,
            "expected_nfe_per_image": self.nfe_per_image(),
        }

    def score(self, batch: Batch) -> AttackOutput:
        p, target = self.params, self.target
        b, n_ts = len(batch), len(p.ts)
        versions = 1 + p.perturbations
        # [B * versions, C, H, W] image-major: row i * versions + v is version v of image i
        x = torch.stack([batch.images] + [center_crop_resize(batch.images, s) for s in self.strengths()], dim=1)
        captions = batch.repeat_captions(versions)
        z0 = target.encode(x.flatten(0, 1), captions)  # every version encoded once
        grid = batch.seed_grid(versions * n_ts)  # [B][versions * len(ts)]: draw v * len(ts) + j
        losses = []
        for j, t in enumerate(p.ts):  # one forward pass per step for every version of every image
            seeds = [grid[i][v * n_ts + j] for i in range(b) for v in range(versions)]
            z = seeding.randn(z0.shape[1:], seeds, device=z0.device, dtype=z0.dtype)
            x_t = ddim.q_sample(z0, z, ddim.abar_at(target.alphas_cumprod, t))
            err = target.eps(x_t, t, captions) - z
            losses.append(err.reshape(err.shape[0], -1).square().mean(dim=1))
        loss = torch.stack(losses, dim=1).reshape(b, versions, n_ts).double()  # [B, versions, len(ts)]
        own, neighbours = loss[:, :1], loss[:, 1:]
        if p.statistic == "difference":
            scores = neighbours.mean(dim=(1, 2)) - own.mean(dim=(1, 2))
        else:
            scores = ((neighbours - own) / own.clamp_min(1e-30)).mean(dim=(1, 2))
        return AttackOutput(scores=scores)


def center_crop_resize(images: torch.Tensor, strength: float) -> torch.Tensor:
    """The centre ``int(H * s) x int(W * s)`` of every image (offsets ``(H - h) // 2``), resized
    back to ``H x W`` with bilinear interpolation (half-pixel centres, no antialiasing)."""
    H, W = images.shape[-2:]
    h, w = int(H * strength), int(W * strength)
    top, left = (H - h) // 2, (W - w) // 2
    crop = images[..., top : top + h, left : left + w]
    return F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)
