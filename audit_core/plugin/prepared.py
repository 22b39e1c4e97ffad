"""An attack entry as a run prepared it (:class:`PreparedAttack`: its config, class, validated
params, the built attack and its seed key) and the variation rows it sends per image
(:func:`rows_per_image`, :func:`queries_per_image`: what the attack states). Shared by the runner, the preflight checks and copyright mode's second
stage, so it sits below all three."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base.config import AttackCfg
from .attacks import Attack

#: params the core once read to count an attack's rows (kept importable; no longer read: an
#: attack states its cost with :meth:`Attack.queries_per_image` / :meth:`Attack.rows_per_image`)
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


def rows_per_image(attack: Any, params: Any = None) -> int:
    """Image-sized rows one image holds at once while ``attack`` scores it: its
    :meth:`Attack.rows_per_image` (1 for an object without one). ``params`` is ignored (kept for
    old callers): the core never reads an attack's param names."""
    fn = getattr(attack, "rows_per_image", None)
    return max(1, int(fn())) if callable(fn) else 1


def queries_per_image(attack: Any) -> int:
    """The most variation queries one image can cost ``attack``: its
    :meth:`Attack.queries_per_image` (0 for an object without one)."""
    fn = getattr(attack, "queries_per_image", None)
    return max(0, int(fn())) if callable(fn) else 0
