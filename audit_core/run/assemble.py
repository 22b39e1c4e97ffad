"""results.json and scores.csv, assembled in ONE place from the run plan and the run store.

Every block is computed by its own module from plain data: an attack's final scores and entry
(:mod:`audit_core.stats.results`, :mod:`audit_core.stats.combine` for combining entries), the
run block, the sweeps (:func:`audit_core.run.sweeps.summarize`), copyright mode's set-level test
(:func:`audit_core.copyright.inference.set_inference`), the second stage's combined test
(:meth:`audit_core.copyright.rescore.SecondStage.combined`), the conclusion
(:func:`audit_core.copyright.conclusion.apply`), the split-reference check
(:mod:`audit_core.run.sanity`) and the reference block (:func:`audit_core.copyright.shift.reference_block`).
This module calls them and is the only one that puts their blocks into results.json's model
(:class:`audit_core.stats.results_schema.Results`). It writes the galleries and thumbnails the
results point to; the Runner writes the two files."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np

from . import environment, sanity, sweeps, thumbnails
from .gallery import gallery_paths, write_gallery
from ..base import secrets
from ..base.records import LABEL_NAMES
from ..copyright import blind, conclusion, inference, shift
from ..stats import combine, metrics, results
from ..stats.results_schema import Reference, Results, SetInferenceBlock, SweepRef, SweepResult


def run_notes(plan: Any, extra: list[str]) -> list[str]:
    """run.notes: the data's notes, the run's own (``extra``), what the target noticed (each
    once, secrets scrubbed) and the images converted for the target."""
    target = plan.target
    notes = list(plan.data.notes) + list(extra)
    notes += [secrets.scrub(f"target: {n}") for n in dict.fromkeys(getattr(target.stats, "notes", []))]
    if plan.images.converted:  # counted before the galleries decode anything
        notes.append(
            f"{len(plan.images.converted)} image(s) were converted to {target.channels} channel(s) and/or "
            f"resized to {target.image_size}x{target.image_size} for the target"
        )
    return notes


def attack_blocks(plan: Any, store: Any, entries_run: list, updates: dict, own: Callable) -> tuple[dict, list]:
    """Every entry's results.json entry and its scores.csv rows (the galleries written)."""
    cfg, mode, records = plan.cfg, plan.mode, plan.data.records
    by_id = {r.id: r for r in records}
    label_names = LABEL_NAMES[mode]
    entries: dict[str, results.AttackResult] = {}
    rows: list[results.ScoreRow] = []
    for pa in entries_run:
        combined = None
        if pa.cls.combines:  # fitted on the calibration split from its components' scores
            combined = combine.combine_entry(pa, store, records, cfg.inference.calibration_fraction, cfg.run.seed)
            stored = {i: v for i, v in zip(combined.ids, zip(combined.scores, combined.nfe, combined.queries))}
        else:
            stored = store.scores(pa.name)
        ids = [r.id for r in records if r.id in stored]
        labels = np.array([by_id[i].label for i in ids])
        raw = np.array([stored[i][0] for i in ids])
        if combined is not None:
            final = combine.final_scores(combined, labels, bootstrap=cfg.metrics.bootstrap, seed=cfg.run.seed)
        elif pa.attack.needs_calibration():
            cal = set(plan.calibration_ids)
            final = results.calibrated_scores(
                raw, np.array([i in cal for i in ids]), updates.get(pa.name, {}), [stored[i][2] for i in ids],
            )
        else:
            maps = None
            if pa.cfg.learned:
                all_maps = store.maps(pa.name)
                maps = np.stack([all_maps[i][0] for i in ids])
            final = results.final_scores(
                raw, labels, pa.cfg.scorer.kind, maps, recipe=pa.cfg.scorer.recipe,
                fraction=cfg.inference.calibration_fraction, bootstrap=cfg.metrics.bootstrap, seed=cfg.run.seed,
            )
        own(*gallery_paths(plan.run_dir, pa.name))
        gallery = write_gallery(
            plan.run_dir, pa.name, ids, final.scores, labels,
            lambda want, name=pa.name: store.maps(name, want), by_id, plan.images.load,
        )
        entries[pa.name] = results.attack_result(
            plugin=pa.cls.name, params=secrets.redact(pa.params.model_dump(mode="json")),
            requires=pa.cls.requires, description=pa.attack.describe(), final=final, labels=labels,
            nfe=[stored[i][1] for i in ids], queries=[stored[i][2] for i in ids],
            stats=store.attack_stats(pa.name), mode=mode, alpha=cfg.inference.alpha,
            fraction=cfg.inference.calibration_fraction, bootstrap=cfg.metrics.bootstrap, seed=cfg.run.seed,
            gallery=gallery,
        )
        rows += [
            results.ScoreRow(pa.name, i, by_id[i].path or "", label_names[int(labels[j])], float(final.scores[j]),
                             str(final.splits[j]))
            for j, i in enumerate(ids)
        ]
    return entries, rows


def held_out_metrics(plan: Any, rows: list) -> dict[str, dict] | None:
    """With an adaptive budget in the run (params calibrated on the calibration split), every
    sweep point's AUC and TPR@1%FPR on the images that entry is evaluated on (the other images),
    so fixed and adaptive budgets are compared on the same images; else None."""
    if plan.mode != "evaluation" or not any(pa.attack.needs_calibration() for pa in plan.attacks if not pa.cls.combines):
        return None
    cal = set(plan.calibration_ids)
    names = set(sweeps.points_by_name(plan.sweeps))
    by_attack: dict[str, list] = {}
    for row in rows:
        if row.attack in names and row.image_id not in cal:
            by_attack.setdefault(row.attack, []).append(row)
    pos = LABEL_NAMES["evaluation"][1]
    out = {}
    for name, group in by_attack.items():
        labels = np.array([1 if r.label == pos else 0 for r in group])
        if labels.min() == labels.max():
            continue
        m = metrics.compute(np.array([r.score for r in group]), labels, plan.cfg.metrics.bootstrap, plan.cfg.run.seed)
        out[name] = {"auc": m["auc"], "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"]}
    return out


def set_inference_block(plan: Any, rows: list, stage2: list, ran: bool, own: Callable) -> tuple[dict, dict]:
    """Copyright mode's ``set_inference`` and ``reference`` blocks (the thumbnails written)."""
    cfg, records, inf, second = plan.cfg, plan.data.records, plan.cfg.inference, plan.second
    combining = {pa.name for pa in plan.attacks if pa.cls.combines}
    exclude = combining | {pa.name for pa in stage2}
    block = inference.set_inference(rows, inf.alpha, inf.combine, cfg.run.seed, inf.permutations, exclude)
    if second is not None:
        block["combined"] = second.combined(block["combined"], rows, ran)
    baseline, stats14 = blind.for_records(records, cfg.run.seed)  # images only: the blind baseline
    reference = shift.reference_block(records, cfg.data.reference, plan.loaded.base_dir, cfg.run.seed, stats14)
    block = conclusion.apply(
        block, rows, baseline, alpha=inf.alpha, method=inf.combine, seed=cfg.run.seed, permutations=inf.permutations,
        min_overlap=inf.min_overlap, max_shift_auc=inf.max_shift_auc,
        shift_auc=reference["shift_check"].get("auc"), power_auc=inf.power_auc,
        power_calibration=plan.power_calibration, exclude=exclude,
        stage2=second.selection(ran) if second is not None else None,
    )
    if plan.data_preflight is not None:
        block["preflight"] = plan.data_preflight
    if inf.sanity:  # the split-reference check, from the reference scores already here
        block["sanity"] = sanity.sanity_block(
            rows, inf.alpha, inf.combine, cfg.run.seed, inf.permutations, combining, {pa.name for pa in stage2}
        )
    own(*thumbnails.paths(plan.run_dir, [r.id for r in records if r.label == 1]))
    thumbnails.write(plan.run_dir, [r for r in records if r.label == 1])  # the report's per-suspect table
    return block, reference


def assemble(
    plan: Any, store: Any, *, stage2_ran: bool = False, calibration_updates: dict | None = None,
    notes: list[str] = (), own: Callable = lambda *paths: None,
) -> tuple[dict[str, Any], str]:
    """results.json (as a dict, secrets scrubbed) and scores.csv (text) of a scored run."""
    cfg, mode, records = plan.cfg, plan.mode, plan.data.records
    second = plan.second
    stage2 = second.entries_scored(stage2_ran) if second is not None else []
    entries, rows = attack_blocks(plan, store, list(plan.attacks) + stage2, calibration_updates or {}, own)
    run = results.run_info(
        name=cfg.run.name, seed=cfg.run.seed, mode=mode, started=store.get_meta("started"),
        finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), fingerprint=plan.fingerprint,
        labels=[r.label for r in records], skipped=plan.data.skipped, notes=run_notes(plan, list(notes)),
        executor=secrets.redact(plan.executor.describe()),
    )
    res = Results(  # the blocks every run has
        run=run, environment=environment.collect(plan.target), target=secrets.redact(plan.target.describe()), attacks=entries
    )
    if plan.sweeps:
        block = sweeps.summarize(plan.sweeps, results.to_dict(res)["attacks"], held_out_metrics(plan, rows))
        points = sweeps.points_by_name(plan.sweeps)
        res = res.model_copy(deep=True)
        if block or points:
            res.sweeps = {k: SweepResult.model_validate(v) for k, v in block.items()}
            for name, entry in res.attacks.items():
                if name in points:
                    base, values = points[name]
                    entry.sweep = SweepRef(base=base, values=values)
            if plan.sweep_note:
                res.run.notes.append(plan.sweep_note)
    if mode == "copyright":
        block, reference = set_inference_block(plan, rows, stage2, stage2_ran, own)
        res = res.model_copy(deep=True)
        res.set_inference = SetInferenceBlock.model_validate(block)
        res = res.model_copy(deep=True)
        res.reference = Reference.model_validate(reference)
    split_col = any(pa.splits for pa in plan.attacks)
    return secrets.scrub_obj(results.to_dict(res)), results.scores_csv(rows, split_col, mode == "copyright")
