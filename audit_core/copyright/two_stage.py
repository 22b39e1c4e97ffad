"""Copyright mode's second stage: more variations where the set's verdict is undecided, within a
query budget (``inference.max_queries``).

Setting ``inference.max_queries`` turns it on. The plan is made and checked before the first query:

1. **stage 1** is the ordinary run: every attack scores every suspect and reference image. Its cost
   in variation rows (every row the attacks request, query-cache hits included, so the bound holds
   whatever the cache does) is known in advance; a budget below it is refused (exit 2).
2. The stage-1 combined rank test (:mod:`audit_core.rank_test`) gives ``p1``. The verdict is
   *undecided* when ``alpha / 2 < p1 <= inference.undecided``: not significant yet, but close
   enough that more precise scores may decide it.
3. Then **stage 2** rescores, with ``inference.stage2_factor`` times the variations (``n``), every
   attack whose score averages variations (a black-box attack with an integer ``n``) on all the
   suspects and on a *matched share* of the reference: a seeded subset of the reference (chosen
   from the run seed and the image ids alone, never from scores), as large as the budget allows
   and at least as large as the suspect set. Draw ``d`` of an image keeps its seed, so the first
   ``n`` draws are stage 1's (the query cache, or a run-local one, serves them). The suspects and
   the share are tested again with the same rank test: ``p2``. Suspects and reference must be
   scored with the same ``n``: more draws alone make ReDiffuse's distances smaller, which is why
   the reference share is rescored too and only the share is compared with the suspects.

**Error control.** The reported combined p-value is ``min(1, 2 * min(p1, p2))`` (``2 * p1`` when
stage 2 did not run): Bonferroni over the two looks. Under the null hypothesis (suspects and
reference exchangeable) each of ``p1`` and ``p2`` is a valid p-value on its own (the share is
chosen without looking at scores, so the suspects and the share stay exchangeable), hence
``P(reject) <= P(p1 <= alpha/2) + P(p2 <= alpha/2) <= alpha``, whatever the dependence between the
two stages and whatever rule decides to run stage 2. The price is that stage 1 alone must now
reach ``alpha / 2``. ``tests/test_two_stage.py`` checks the rate on simulated null sets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

#: appended to an entry's name for its stage-2 rescoring (results.json, scores.csv)
SUFFIX = "+stage2"


@dataclass
class Plan:
    """The second stage, as planned before the first query."""

    max_queries: int
    stage1_queries: int  # every variation row of stage 1 (all attacks, all images)
    rows_per_image: int  # stage-2 rows per rescored image, all rescored attacks together
    n_suspects: int
    n_reference_share: int  # 0: stage 2 does not fit (see ``note``)
    factor: int
    undecided: float
    attacks: dict[str, int] = field(default_factory=dict)  # entry name -> stage-2 n
    note: str | None = None

    @property
    def feasible(self) -> bool:
        return self.n_reference_share > 0

    @property
    def stage2_queries(self) -> int:
        """The most stage 2 can request (0 when it does not fit)."""
        return self.rows_per_image * (self.n_suspects + self.n_reference_share) if self.feasible else 0

    def describe(self) -> dict[str, Any]:
        return {
            "max_queries": self.max_queries, "stage1_queries": self.stage1_queries,
            "stage2_queries_at_most": self.stage2_queries, "stage2_n": dict(self.attacks),
            "stage2_reference_share": self.n_reference_share, "undecided": self.undecided,
            **({"note": self.note} if self.note else {}),
        }


def make_plan(
    *, max_queries: int, stage1_queries: int, stage2_rows: dict[str, tuple[int, int]], n_suspects: int,
    n_reference: int, factor: int, undecided: float, where: str,
) -> Plan:
    """The plan from the stage-1 cost and, per rescorable entry, ``(stage-2 n, stage-2 rows per
    image)``. Raises ``ValueError`` (the caller words it as a ConfigError naming ``where``) when
    stage 1 alone exceeds the budget; a budget too small for stage 2 gives a plan with a note."""
    if stage1_queries > max_queries:
        raise ValueError(
            f"{where}: max_queries={max_queries} is below what stage 1 alone requests: {stage1_queries} "
            f"variation rows (every attack on every suspect and reference image). Raise max_queries to at "
            f"least {stage1_queries}, or lower the attacks' n"
        )
    per_image = sum(rows for _, rows in stage2_rows.values())
    left = max_queries - stage1_queries
    share = min(n_reference, left // per_image - n_suspects) if per_image > 0 else 0
    plan = Plan(
        max_queries=max_queries, stage1_queries=stage1_queries, rows_per_image=per_image, n_suspects=n_suspects,
        n_reference_share=0, factor=factor, undecided=undecided, attacks={k: n for k, (n, _) in stage2_rows.items()},
    )
    need = per_image * 2 * n_suspects
    if share < n_suspects:
        plan.note = (
            f"no second stage: the {left} queries left after stage 1 cannot rescore the {n_suspects} suspects and "
            f"a matched share of at least as many reference images ({need} queries at {per_image} per image); "
            f"max_queries >= {stage1_queries + need} allows it"
        )
    else:
        plan.n_reference_share = int(share)
    return plan


def reference_share(reference_ids: list[str], k: int, run_seed: int) -> list[str]:
    """``k`` reference ids chosen by a seeded hash of (run seed, id): independent of every score,
    the same on every resume, and in the given order."""
    def key(i: str) -> str:
        return hashlib.sha256(f"{run_seed}\x00stage2\x00{i}".encode()).hexdigest()

    chosen = set(sorted(reference_ids, key=key)[:k])
    return [i for i in reference_ids if i in chosen]


def undecided(p1: float, alpha: float, upper: float) -> bool:
    """Whether stage 2 runs: stage 1 is not significant at ``alpha / 2`` but ``p1 <= upper``."""
    return alpha / 2 < p1 <= upper


def two_stage_p(p1: float, p2: float | None) -> float:
    """Bonferroni over the looks taken: ``min(1, 2 min(p1, p2))``, or ``min(1, 2 p1)``."""
    return float(min(1.0, 2.0 * (p1 if p2 is None else min(p1, p2))))


def combined_block(stage1: dict[str, Any], stage2: dict[str, Any] | None, plan: Plan, ran: bool, alpha: float) -> dict[str, Any]:
    """The ``combined`` block of a two-stage run: the stage-1 rank test's block with its p-value
    replaced by :func:`two_stage_p`, the stage p-values and the spend under ``two_stage``."""
    from .inference import verdict

    p1 = stage1.get("p_value")
    out = dict(stage1)
    if p1 is None:
        return out
    p2 = stage2.get("p_value") if (ran and stage2) else None
    p = two_stage_p(p1, p2)
    info: dict[str, Any] = {
        "p_stage1": p1, "p_stage2": p2, "stage2_ran": bool(ran and stage2),
        "rule": (
            f"stage 2 runs when alpha/2 < p_stage1 <= {plan.undecided:g}; p_value = min(1, 2 min(p_stage1, p_stage2)) "
            f"(Bonferroni over the two looks keeps the false-positive rate at alpha)"
        ),
        **plan.describe(),
    }
    if ran and stage2:
        info["stage2_attacks"] = stage2.get("attacks")
        info["stage2_n_suspects"] = plan.n_suspects
        info["stage2_statistic"] = stage2.get("statistic")
    elif not plan.feasible:
        info["why_no_stage2"] = plan.note
    elif not undecided(p1, alpha, plan.undecided):
        info["why_no_stage2"] = "decided at stage 1" if p1 <= alpha / 2 else f"p_stage1 above {plan.undecided:g}: not promising"
    out["two_stage"] = info
    out["p_value"] = p
    if stage1.get("min_p_value") is not None:
        out["min_p_value"] = min(1.0, 2.0 * stage1["min_p_value"])
    looks = "two looks" if info["stage2_ran"] else "stage 1 of two planned looks"
    out["verdict"] = verdict(p, alpha, None, what=f"{stage1.get('n_attacks')} attack(s) combined (rank, permutation; {looks}, Bonferroni)")
    return out


def stage1_cost(rows_per_image: dict[str, int], n_images: int) -> int:
    """Variation rows stage 1 requests: ``sum(rows per image) * images``."""
    return int(sum(rows_per_image.values())) * int(n_images)

