"""The runner's side of copyright mode's second stage: check the config, plan the budget and build
the stage-2 entries before any query, decide from the stored stage-1 scores, rescore, and merge
the two looks into the ``combined`` block. It takes the run plan's pieces (never the Runner). The
rule and its error control are :mod:`audit_core.copyright.two_stage`'s; docs/copyright-mode.md
explains both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import inference, two_stage
from ..plugin import factory, manager as plugins
from ..plugin.prepared import PreparedAttack, queries_per_image
from ..stats import results
from ..plugin.attacks import AttackContext
from ..base.errors import ConfigError
from ..base.records import LABEL_NAMES
from ..plugin.targets import VARIATION


def wanted(cfg: Any, mode: str) -> bool:
    """Whether the run has a second stage to plan (``inference.max_queries`` in copyright mode)."""
    return cfg.inference.max_queries is not None and mode == "copyright"


def check_config(loaded: Any, mode: str, entries: list) -> None:
    """``inference.max_queries`` only in copyright mode, with the rank combination and
    threshold-scored entries (ConfigError naming the line; before the model loads)."""
    inf = loaded.cfg.inference
    if inf.max_queries is None:
        return
    where = f"inference.max_queries ({loaded.where('inference', 'max_queries')})"
    if mode != "copyright":
        raise ConfigError(
            f"{where}: the query budget and its second stage apply to copyright mode (data: suspects/reference); "
            f"this run is in evaluation mode. Remove inference.max_queries"
        )
    if inf.combine != "rank":
        raise ConfigError(f"{where}: the second stage retests with the rank combination; set inference.combine: rank (it is {inf.combine!r})")
    for _, acfg in entries:
        if acfg.learned:
            raise ConfigError(
                f"{where}: attack {acfg.key!r} uses scorer: classifier; the second stage rescores threshold-scored "
                f"attacks only. Remove inference.max_queries or the classifier scorer"
            )
    if inf.undecided <= inf.alpha / 2:
        raise ConfigError(
            f"inference.undecided ({loaded.where('inference', 'undecided')}): {inf.undecided:g} must be above "
            f"alpha / 2 = {inf.alpha / 2:g}, or stage 2 could never run"
        )


def _shown(updates: dict[str, Any]) -> str:
    """``n=8, t=100``: the stage-2 param updates, for an error message."""
    return ", ".join(f"{k}={v!r}" for k, v in updates.items())


@dataclass(frozen=True)
class SecondStage:
    """One run's second stage as planned before any query (part of the run plan): the budget
    (:class:`two_stage.Plan`), the stage-2 entries, and what deciding and rescoring need (the
    inference settings, the records, the stage-1 attacks, the run seed). Whether it ran is the
    run's outcome, passed to the methods that report it (``ran``)."""

    plan: two_stage.Plan
    entries: tuple
    inference: Any
    records: tuple
    attacks: tuple  # the stage-1 entries (PreparedAttack)
    run_seed: int

    # ------------------------------------------------------------------ after stage 1
    def ids(self) -> list[str]:
        """The suspects and the seeded reference share, in record order."""
        recs, seed = self.records, self.run_seed
        share = set(two_stage.reference_share([r.id for r in recs if r.label == 0], self.plan.n_reference_share, seed))
        return [r.id for r in recs if r.label == 1 or r.id in share]

    def stage1_combined(self, store: Any) -> dict[str, Any]:
        """The stage-1 combined rank test from the stored scores: the same rows, order and seed
        as the ``combined`` block of results.json."""
        inf = self.inference
        sus, ref = LABEL_NAMES["copyright"][1], LABEL_NAMES["copyright"][0]
        by_attack = {}
        for pa in self.attacks:
            if pa.cls.combines:
                continue
            stored = store.scores(pa.name)
            by_attack[pa.name] = [
                results.ScoreRow(pa.name, rec.id, rec.path or "", sus if rec.label == 1 else ref, float(stored[rec.id][0]), "all")
                for rec in self.records if rec.id in stored
            ]
        return inference.rank_block(by_attack, inf.alpha, self.run_seed, inf.permutations)

    def run(self, store: Any, progress: Any, score: Any) -> bool:
        """Rescore the suspects and the reference share with the stage-2 entries when the stage-1
        verdict is undecided (decided from the stored scores, so a resumed run decides the same);
        True when it ran. ``progress``: a progress tracker (a context manager, entered here);
        ``score(store, progress, entry, records)`` scores and stores one entry's records."""
        inf = self.inference
        if not self.plan.feasible or not two_stage.undecided(self.stage1_combined(store)["p_value"], inf.alpha, inf.undecided):
            return False
        ids = set(self.ids())
        todo_all = [rec for rec in self.records if rec.id in ids]
        with progress:
            for pa in self.entries:
                done = store.done_ids(pa.name)
                todo = [rec for rec in todo_all if rec.id not in done]
                progress.start(pa.name, len(todo_all), len(todo_all) - len(todo))
                score(store, progress, pa, todo)
        return True

    # ------------------------------------------------------------------ results
    def entries_scored(self, ran: bool) -> list:
        """The stage-2 entries that ran (their results go beside the attacks')."""
        return list(self.entries) if ran else []

    def combined(self, stage1: dict[str, Any], rows: list, ran: bool) -> dict[str, Any]:
        """The ``combined`` block of the run: stage 2's rank test (the rescored entries in place of
        their stage-1 originals, the other attacks as they were, on the suspects and the share)
        merged with stage 1's by :func:`two_stage.combined_block`."""
        inf = self.inference
        stage2 = None
        selection = self.selection(ran)
        if selection is not None:
            names, ids = selection
            by_attack = {n: [row for row in rows if row.attack == n and row.image_id in ids] for n in names}
            stage2 = inference.rank_block(by_attack, inf.alpha, self.run_seed, inf.permutations)
        return two_stage.combined_block(stage1, stage2, self.plan, ran, inf.alpha)

    def selection(self, ran: bool) -> tuple[list[str], set[str]] | None:
        """Stage 2's test, when it ran: (the entries it combines: the rescored ones in place of their
        stage-1 originals, the other attacks as they were; the ids of the suspects and the share)."""
        if not ran:
            return None
        rescored = {pa.name.removesuffix(two_stage.SUFFIX) for pa in self.entries}
        names = [pa.name for pa in self.attacks if not pa.cls.combines and pa.name not in rescored]
        names += [pa.name for pa in self.entries]
        return names, set(self.ids())


def plan_second_stage(
    *, inference: Any, mode: str, records: Any, attacks: Any, target: Any, run_seed: int, where: str
) -> SecondStage | None:
    """The budgeted plan and the stage-2 entries (each attack whose ``with_budget(stage2_factor)``
    gives param updates, rebuilt by the factory with them and its own seed_key), or None without a
    budget. The queries counted are what each attack states (``queries_per_image()``: for ``n:
    auto``, its ``max_n``); no param is read. A budget below stage 1 is a ConfigError naming
    ``where`` (``inference.max_queries``'s line)."""
    inf = inference
    if inf.max_queries is None or mode != "copyright":
        return None
    rows1, rows2, entries = {}, {}, []
    for pa in attacks:
        if pa.cls.combines or VARIATION not in pa.cls.requires:
            continue  # grey-box attacks send no variation queries; their scores are reused
        rows1[pa.name] = queries_per_image(pa.attack)
        updates = pa.attack.with_budget(inf.stage2_factor) if callable(getattr(pa.attack, "with_budget", None)) else None
        if not updates:
            continue  # the attack cannot scale its queries (e.g. n: auto): stage 1 only
        name = pa.name + two_stage.SUFFIX
        ctx = AttackContext(name=name, seed_key=pa.seed_key, run_seed=run_seed, distances=plugins.registry("distances"))
        params, attack = factory.with_params(  # validated, built and checked by the factory
            pa.cls, pa.params, updates, target, ctx, where=f"{where}: the second stage's {name!r} ({_shown(updates)})"
        )
        entries.append(PreparedAttack(pa.cfg, name, pa.cls, params, attack, pa.seed_key))
        q = queries_per_image(attack)
        rows2[name] = (q, q)
    if not entries:
        raise ConfigError(
            f"{where}: the second stage needs an attack that averages variations with an integer n "
            f"(e.g. rediffuse); none of this run's attacks does. Remove inference.max_queries"
        )
    labels = [r.label for r in records]
    n_sus = sum(1 for v in labels if v == 1)
    try:
        plan = two_stage.make_plan(
            max_queries=inf.max_queries, stage1_queries=two_stage.stage1_cost(rows1, len(labels)), stage2_rows=rows2,
            n_suspects=n_sus, n_reference=len(labels) - n_sus, factor=inf.stage2_factor, undecided=inf.undecided,
            where=where,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return SecondStage(plan, tuple(entries), inf, tuple(records), tuple(attacks), run_seed)
