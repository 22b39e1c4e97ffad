"""The ``variation-similarity`` attack: params, validation and scoring (the hook that registers
it is in ``__init__.py``)."""

from __future__ import annotations

import torch
from pydantic import Field

from audit_core import VARIATION, Attack, AttackOutput, AttackParams, Batch


class Params(AttackParams):
    t: int = Field(100, description="diffusion step the image is noised to")
    k: int = Field(50, description="DDIM sampling interval")
    n: int = Field(2, ge=1, description="variations per image")
    distance: str = "l2"


class VariationSimilarity(Attack):
    name = "variation-similarity"
    requires = frozenset({VARIATION})
    Params = Params
    residual_maps = True  # score() returns residual maps, so `scorer: classifier` may be used

    @property
    def expected_nfe_per_image(self) -> float | None:
        """n variations, each t/k DDIM steps on a target that knows its NFEs (the core warns
        when the target's counters measure something else)."""
        return self.params.n * (self.params.t // self.params.k) if self.target.nfe_per_query(self.params.t, self.params.k) else None

    # what an image costs: the core sizes its memory check and copyright mode's query budget
    # from these (the defaults assume one variation per image and no second stage)
    def queries_per_image(self) -> int:
        return self.params.n

    def with_budget(self, factor: int) -> dict:
        """Param updates that spend ``factor`` x the queries (copyright mode's second stage)."""
        return {"n": self.params.n * factor}

    def check(self) -> None:
        self.check_t(self.params.t)
        self.check_divides(self.params.t, self.params.k)
        self.dist = self.distance(self.params.distance)  # fails early on an unknown distance

    def score(self, batch: Batch) -> AttackOutput:
        p = self.params
        # n draws of every image in one call: seeds [B][n] in, variations [B, n, C, H, W] out
        variations = self.target.variation(batch.images, p.t, p.k, batch.seed_grid(p.n), batch.captions)
        images = batch.images.float().repeat_interleave(p.n, dim=0)  # rows i*n .. i*n+n-1 are image i
        d = self.dist(variations.flatten(0, 1), images).reshape(len(batch), p.n)
        best = d.min(dim=1).values
        closest = variations[torch.arange(len(batch)), d.argmin(1)]
        return AttackOutput(scores=-best, residuals=(batch.images - closest).abs(), reconstructions=closest)
