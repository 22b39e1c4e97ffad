"""Attacks that combine other attack entries' scores (the ensemble plugin), computed once every
other attack has scored every image.

A combining attack subclasses :class:`CombiningAttack`: it queries nothing (``requires`` is
empty, its ``score`` is never called per batch) and implements :meth:`CombiningAttack.fit_predict`
on a table of its components' scores. The runner calls :func:`combine_entry` while it builds the
results: the table is fitted on a seeded calibration split (the same stratified
``inference.calibration_fraction`` split the learned scorer uses, :func:`scorer.calibration_split`)
and the combined score of every image is returned with that mask, so metrics (and, in copyright
mode, the set-level test) use the held-out images only, exactly as for ``scorer: classifier``.

Components must use the threshold scorer: a learned scorer's scores on its own training images
are in-sample, and fitting a combination on them would leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import metrics
from ..plugin.attacks import Attack, AttackOutput, Batch
from ..base.errors import ConfigError
from .results import FinalScores
from .scorer import calibration_split


class CombiningAttack(Attack):
    """Base of attacks that combine other entries' scores after scoring (see the module notes)."""

    combines: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset()

    def components(self) -> list[str]:
        """The attack entry names (``attacks[].name``, or the plugin name) combined, in order."""
        raise NotImplementedError

    def fit_predict(self, table: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Fit on the rows ``fit`` (bool mask) of ``table`` ``[N, m]`` (component scores, higher =
        member) with their ``labels`` (1 = member / suspect), and return the combined score of
        every row ``[N]`` plus JSON-able facts about the fit. Rows outside ``fit`` must not
        influence the fit (their labels are there only because the array is shared)."""
        raise NotImplementedError

    def score(self, batch: Batch) -> AttackOutput:  # pragma: no cover - the runner never calls it
        raise RuntimeError(f"attack {self.context.name!r} combines other attacks' scores; it is not scored per batch")


@dataclass
class Combined:
    """One combining entry's results: per image (in ``ids`` order) the combined score and whether
    the image was in the calibration (fitting) split, plus the summed cost of the components."""

    ids: list[str]
    scores: np.ndarray
    calibration: np.ndarray
    labels: np.ndarray
    info: dict[str, Any]
    nfe: np.ndarray
    queries: np.ndarray
    component_scores: dict[str, np.ndarray]


def check_components(attacks: list[Any], where) -> None:
    """Validate every combining entry of the prepared ``attacks`` (objects with ``name``, ``cls``,
    ``cfg``, ``attack``) before any image is scored: each component must be another, non-combining
    entry of the run that uses the threshold scorer. ``where(pa)`` names the entry's params for the
    message (``attacks[2].params (audit.yaml, line 14)``)."""
    by_name = {pa.name: pa for pa in attacks}
    for pa in attacks:
        if not getattr(pa.cls, "combines", False):
            continue
        names = pa.attack.components()
        problem = None
        if len(names) < 2:
            problem = "needs at least two attack entries in `of`"
        elif len(set(names)) < len(names):
            problem = "lists an attack more than once in `of`"
        for n in names:
            if problem:
                break
            other = by_name.get(n)
            if other is None:
                avail = ", ".join(repr(p.name) for p in attacks if not getattr(p.cls, "combines", False)) or "none"
                problem = f"combines {n!r}, which is not an attack entry of this run (entries: {avail})"
            elif other is pa or getattr(other.cls, "combines", False):
                problem = f"cannot combine {n!r}: it is a combining entry itself"
            elif other.cfg.learned:
                problem = (
                    f"cannot combine {n!r}: it uses `scorer: classifier`, whose scores on its own training "
                    f"images are in-sample; combine its threshold-scored entry instead"
                )
        if problem:
            raise ConfigError(f"{where(pa)}: attack {pa.name!r} {problem}")


def combine_entry(pa: Any, store: Any, records: list[Any], fraction: float, seed: int) -> Combined:
    """Fit and apply the combining entry ``pa`` on the stored scores of its components.

    Only images scored by every component take part (all of them, once a run is complete). The
    calibration split is drawn over those images by label with ``(fraction, seed)``, so it equals
    the learned scorer's split on the same images."""
    names = pa.attack.components()
    stored = {n: store.scores(n) for n in names}
    ids = [r.id for r in records if all(r.id in stored[n] for n in names)]
    label_of = {r.id: r.label for r in records}
    labels = np.array([label_of[i] for i in ids], dtype=np.int64)
    table = np.array([[stored[n][i][0] for n in names] for i in ids], dtype=np.float64).reshape(len(ids), len(names))
    fit = calibration_split(labels, fraction, seed)
    scores, info = pa.attack.fit_predict(table, labels, fit)
    info = {
        "kind": "combination",
        "of": names,
        "n_calibration": int(fit.sum()),
        "n_evaluation": int((~fit).sum()),
        "note": (
            f"fitted on a seeded {fraction:.0%} calibration split of members and non-members (the learned "
            f"scorer's split); metrics are on the remaining {1 - fraction:.0%} only"
        ),
        **info,
    }
    return Combined(
        ids=ids,
        scores=np.asarray(scores, dtype=np.float64),
        calibration=fit,
        labels=labels,
        info=info,
        nfe=np.array([sum(stored[n][i][1] for n in names) for i in ids], dtype=np.float64),
        queries=np.array([sum(stored[n][i][2] for n in names) for i in ids], dtype=np.float64),
        component_scores={n: table[:, j] for j, n in enumerate(names)},
    )


def final_scores(combined: Combined, labels: np.ndarray, *, bootstrap: int, seed: int) -> FinalScores:
    """The combining entry's :class:`audit_core.results.FinalScores`: evaluated on the held-out
    images, with each component's metrics on the same images, and no cost of its own."""
    held = ~combined.calibration
    labels = np.asarray(labels)
    return FinalScores(
        combined.scores, held, np.where(combined.calibration, "calibration", "evaluation").astype(object), combined.info,
        extra={
            "components_on_evaluation": {
                n: metrics.compute(s[held], labels[held], bootstrap, seed) for n, s in combined.component_scores.items()
            },
            "cost_note": "nfe/queries per image are the sum of the combined entries' (already spent by them)",
        },
        free=True,
    )
