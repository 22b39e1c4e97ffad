"""results.json's per-attack and run blocks, computed from plain data: an attack's final scores
after its scorer (:func:`final_scores`, :func:`calibrated_scores`), its entry
(:func:`attack_result`), the run block (:func:`run_info`), and the JSON and scores.csv text.

The typed models are :mod:`audit_core.stats.results_schema`'s (re-exported here); the whole
results.json is put together in one place, :mod:`audit_core.run.assemble`. Nothing here reads a
run directory, a Runner or a config object. ``docs/results.schema.json`` is generated from the
models (``python -m audit_core.stats.results --schema``) and ``docs/results.md`` explains every field.

scores.csv is written from :class:`ScoreRow` by :func:`scores_csv` (one row per attack and image).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "results.schema.json"
SCHEMA_ID = "https://github.com/audit-diffusion/audit/docs/results.schema.json"


# the models live in results_schema.py (re-exported here: the old import path)
from .results_schema import *  # noqa: E402,F401,F403
from .results_schema import (  # noqa: E402
    AttackResult, Results, RunInfo, SweepResult, _Closed, _Open, attack_entries,  # noqa: F401
)


# --------------------------------------------------------------------------------- assembly
@dataclass
class FinalScores:
    """An attack's scores after its scorer: ``scores`` (higher = member), which rows are evaluated
    (``eval_mask``; False for a learned scorer's training split) and the ``split`` column."""

    scores: np.ndarray
    eval_mask: np.ndarray
    splits: np.ndarray
    scorer: dict[str, Any]
    threshold_scorer_metrics: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more AttackResult keys (declared fields)
    free: bool = False  # queries nothing itself (a combination): spent is zero


def final_scores(
    raw, labels, scorer: str, maps=None, *, recipe: str = "default", fraction: float, bootstrap: int, seed: int
) -> FinalScores:
    """Threshold scorer: the attack's raw scores. Learned scorer (``classifier``): a classifier
    trained (with the named ``recipe``, :data:`audit_core.scorer.RECIPES`) on a calibration split
    of the residual ``maps`` scores the held-out rest."""
    raw, labels = np.asarray(raw), np.asarray(labels)
    if scorer != "classifier":
        return FinalScores(
            raw, np.ones(len(raw), dtype=bool), np.array(["all"] * len(raw), dtype=object),
            {"kind": "threshold", "note": "the attack's score, thresholded"},
        )
    from .scorer import train_recipe

    sr = train_recipe(maps, labels, recipe, fraction=fraction, seed=seed)
    eval_mask = ~sr.calibration
    return FinalScores(
        sr.scores, eval_mask, np.where(sr.calibration, "calibration", "evaluation").astype(object), sr.info,
        metrics.compute(raw[eval_mask], labels[eval_mask], bootstrap, seed),
    )


def calibrated_scores(raw, in_calibration, updates: dict[str, Any], queries) -> FinalScores:
    """An attack whose params were calibrated on the run's calibration split (it scored those
    images first): its raw scores, evaluated on the other images only."""
    raw, cal = np.asarray(raw), np.asarray(in_calibration, dtype=bool)
    q = np.asarray(queries, dtype=np.float64)
    return FinalScores(
        raw, ~cal, np.where(cal, "calibration", "evaluation").astype(object),
        {
            "kind": "threshold",
            "calibrated_params": updates,
            "note": (
                "params calibrated on the run's calibration split (scored first, with the whole budget); "
                "metrics are on the other images only"
            ),
        },
        extra={
            "queries_per_image_evaluation": float(q[~cal].mean()) if (~cal).any() else None,
            "queries_histogram_evaluation": queries_histogram(q[~cal]) if (~cal).any() else None,
        },
    )


def queries_histogram(queries) -> dict[str, int]:
    """``{"m": number of images that spent m queries}``, in increasing m (per-image queries are
    whole numbers of variation rows; shares of a batch's cost are rounded)."""
    counts: dict[int, int] = {}
    for q in np.rint(np.asarray(queries, dtype=np.float64)).astype(int):
        counts[int(q)] = counts.get(int(q), 0) + 1
    return {str(m): counts[m] for m in sorted(counts)}


def attack_result(
    *, plugin: str, params: dict, requires, description: dict, final: FinalScores, labels, nfe, queries,
    stats: dict, mode: str, alpha: float, fraction: float, bootstrap: int, seed: int, gallery: list[dict],
) -> AttackResult:
    """One attack's entry from its stored per-image values (``nfe``, ``queries`` per image) and
    the store's counters (``stats``: seconds, cache_hits, nfe_saved, extras)."""
    labels = np.asarray(labels)
    s_eval, l_eval = final.scores[final.eval_mask], labels[final.eval_mask]
    entry: dict[str, Any] = {"plugin": plugin, "params": params, "requires": sorted(requires), **description}
    entry["scorer"] = final.scorer
    if final.threshold_scorer_metrics is not None:
        entry["threshold_scorer_metrics"] = final.threshold_scorer_metrics
    entry["metrics"] = metrics.compute(s_eval, l_eval, bootstrap, seed)
    entry["roc"] = metrics.roc_points(s_eval, l_eval)
    if mode == "copyright":
        entry["metrics_note"] = (
            "copyright mode: metrics and ROC compare suspects (positive class) with the reference; "
            "they measure membership only if every suspect is a member. See set_inference."
        )
    if mode == "evaluation":
        entry["calibrated"] = metrics.calibrated_operating_point(s_eval, l_eval, alpha, fraction, seed)
    seconds, hits = float(stats["seconds"]), int(stats["cache_hits"])
    entry.update(
        nfe_per_image=float(np.mean(nfe)), queries_per_image=float(np.mean(queries)), cache_hits=hits,
        spent={"queries": int(round(sum(queries))) - hits, "nfe": int(round(sum(nfe))) - int(stats["nfe_saved"])},
        seconds=round(seconds, 3), seconds_per_100_images=round(100 * seconds / max(len(labels), 1), 3),
        n_members=int((l_eval == 1).sum()), n_nonmembers=int((l_eval == 0).sum()),
    )
    entry.update(final.extra)
    if final.free:
        entry["spent"] = {"queries": 0, "nfe": 0}
    if stats.get("extras"):
        entry["extras"] = stats["extras"]
    entry["gallery"] = gallery
    return AttackResult.model_validate(entry)


def run_info(
    *, name: str, seed: int, mode: str, started: str | None, finished: str, fingerprint: str, labels,
    skipped: list[dict], notes: list[str], executor: dict,
) -> RunInfo:
    """The ``run`` block; ``labels`` are every record's label (1 member/suspect, 0 otherwise)."""
    pos = sum(1 for v in labels if v == 1)
    neg = sum(1 for v in labels if v == 0)
    counts = {"n_suspects": pos, "n_reference": neg} if mode == "copyright" else {"n_members": pos, "n_nonmembers": neg}
    block = {
        "name": name, "seed": seed, "mode": mode, "started": started, "finished": finished,
        "config_fingerprint": fingerprint, **({} if mode == "copyright" else counts),
        "skipped": list(skipped), "notes": list(notes), "executor": executor,
        **(counts if mode == "copyright" else {}),
    }
    return RunInfo.model_validate(block)


def to_dict(results: Results) -> dict[str, Any]:
    """The JSON-ready dict (keys present only where set; Python floats and ints as computed)."""
    return results.model_dump(mode="python", exclude_unset=True)


def to_json(results: Results | dict) -> str:
    data = to_dict(results) if isinstance(results, Results) else results
    return json.dumps(data, indent=2, default=_json_default)


def _json_default(o: Any) -> Any:
    for kind, cast in ((np.integer, int), (np.floating, float), (np.ndarray, np.ndarray.tolist), (Path, str)):
        if isinstance(o, kind):
            return cast(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------------- scores.csv
@dataclass
class ScoreRow:
    """One row of scores.csv: an image's final score under one attack."""

    attack: str
    image_id: str
    path: str
    label: str  # LABEL_NAMES[mode][label]
    score: float
    split: str = "all"  # all | calibration | evaluation (learned scorer)
    flagged: str = ""  # copyright mode: "true" | "false" | "" (not tested)
    p_value: str = ""


#: a spreadsheet reads a cell starting with one of these as a formula (``=HYPERLINK(...)``)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def csv_cell(text: str) -> str:
    """A text cell of scores.csv made inert: control characters (a newline in a file name) as
    ``\\xNN``, bytes that are not UTF-8 as ``\\xNN``, and a leading ``= + - @`` (a formula in a
    spreadsheet) behind a ``'``. Ordinary names are unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a non-UTF-8 file name (lone surrogates): its bytes as \xNN
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return "'" + text if text.startswith(FORMULA_START) else text


def scores_csv(rows: list[ScoreRow], split_col: bool, copyright_cols: bool) -> str:
    """scores.csv text: attack, image_id, path, label, score[, split][, flagged, p_value]; the
    text cells through :func:`csv_cell`."""
    header = ["attack", "image_id", "path", "label", "score"] + (["split"] if split_col else [])
    header += ["flagged", "p_value"] if copyright_cols else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        row = [csv_cell(r.attack), csv_cell(r.image_id), csv_cell(r.path), r.label, repr(float(r.score))]
        row += [r.split] if split_col else []
        row += [r.flagged, r.p_value] if copyright_cols else []
        w.writerow(row)
    return buf.getvalue()


# --------------------------------------------------------------------------------- schema
def json_schema() -> dict[str, Any]:
    """The JSON Schema of results.json (draft 2020-12), generated from :class:`Results`."""
    schema = Results.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m audit_core.results --schema`` prints the schema; ``--write`` updates docs/."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args not in (["--schema"], ["--write"]):
        print("usage: python -m audit_core.results --schema | --write", file=sys.stderr)
        return 2
    if args == ["--write"]:
        SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    else:
        sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
