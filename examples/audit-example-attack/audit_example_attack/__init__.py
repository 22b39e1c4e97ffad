"""A complete third-party attack plugin in one file.

``variation-similarity``: ask the target for ``n`` variations of each image at step ``t`` with
interval ``k`` and score the image by how close the *closest* variation is to it (higher = more
member-like). It needs only the variation API, so it runs against black-box targets.

Install with ``pip install -e examples/audit-example-attack`` (its tests: ``pytest
examples/audit-example-attack/tests``) and use it in audit.yaml::

    attacks:
      - {plugin: variation-similarity, params: {t: 100, k: 50, n: 2, distance: l2}}
"""

from __future__ import annotations

import torch
from pydantic import Field

from audit_core import VARIATION, Attack, AttackOutput, AttackParams, Batch, hookimpl


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

    def check(self) -> None:
        self.check_t(self.params.t)
        self.check_divides(self.params.t, self.params.k)
        self.dist = self.distance(self.params.distance)  # fails early on an unknown distance

    def score(self, batch: Batch) -> AttackOutput:
        p = self.params
        images, captions = batch.repeat(p.n)  # image-major: rows i*n .. i*n+n-1 are image i
        variations = self.target.variation(images, p.t, p.k, batch.seed_matrix(p.n), captions)
        d = self.dist(variations, images).reshape(len(batch), p.n)
        best = d.min(dim=1).values
        closest = variations.reshape(len(batch), p.n, *variations.shape[1:])[torch.arange(len(batch)), d.argmin(1)]
        return AttackOutput(scores=-best, residuals=(batch.images - closest).abs(), reconstructions=closest)


@hookimpl
def register_attacks(register):
    register(VariationSimilarity)
