"""An attack entry as a run prepared it (:class:`PreparedAttack`: its config, class, validated
params, the built attack and its seed key) and the variation rows it sends per image
(:func:`rows_per_image`). Shared by the runner, the preflight checks and copyright mode's second
stage, so it sits below all three."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base.config import AttackCfg
from .attacks import Attack

#: params that say how many variation rows an attack sends per image
ROW_PARAMS = ("n", "draws")


@dataclass
class PreparedAttack:
    cfg: AttackCfg
    name: str
    cls: type[Attack]
    params: Any
    attack: Attack
    seed_key: str

    @property
    def splits(self) -> bool:
        """Whether the entry is fitted on a calibration split (learned scorer, combination,
        calibrated params), so only its held-out images count for metrics and tests."""
        return self.cfg.learned or self.cls.combines or self.attack.needs_calibration()


def rows_per_image(attack: Any, params: Any) -> int:
    """Variation rows an attack sends per image: its ``rows_per_image()`` when it has one, else
    the largest of its ``n``/``draws`` params (latent ReDiffuse draws 2n), else 1."""
    fn = getattr(attack, "rows_per_image", None)
    if callable(fn):
        return max(1, int(fn()))
    rows = 1
    for name in ROW_PARAMS:
        v = getattr(params, name, None)
        if isinstance(v, int) and not isinstance(v, bool):
            rows = max(rows, v)
    if getattr(attack, "variant", None) == "latent" and getattr(params, "latent_reference", None) == "variation":
        rows *= 2
    return rows
