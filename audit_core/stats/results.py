"""results.json: typed models and the pure functions that assemble them from stored scores.

The runner collects plain data (per-image scores, labels, counters from the run store, the
target's and executor's descriptions) and hands it to the functions here; sweeps and copyright
inference add their blocks through :func:`with_sweeps` and :func:`with_set_inference` from plain
data too. Nothing here reads a run directory, a Runner or a config object. The models are the
contract for reporters and other tools: ``docs/results.schema.json`` is generated from them
(``python -m audit_core.results --schema``) and ``docs/results.md`` explains every field.

scores.csv is written from :class:`ScoreRow` by :func:`scores_csv` (one row per attack and image).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_serializer

from . import metrics
from ..base.records import SET_INFERENCE_BLOCKS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "results.schema.json"
SCHEMA_ID = "https://github.com/audit-diffusion/audit/docs/results.schema.json"


# --------------------------------------------------------------------------------- models
class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """A block plugins may extend with their own keys (kept as given)."""

    model_config = ConfigDict(extra="allow")


class Metric(_Open):
    """One metric with its 95 % bootstrap interval (``supported`` / ``note`` for TPR at FPR levels
    the number of non-members cannot resolve, and for ASR on unbalanced sets)."""

    value: Optional[float]
    ci95: list[Optional[float]]
    supported: Optional[bool] = None
    note: Optional[str] = None


class RunInfo(_Closed):
    name: str
    seed: int
    mode: Literal["evaluation", "copyright"]
    started: Optional[str] = Field(description="UTC ISO-8601 time the run (first) started")
    finished: str = Field(description="UTC ISO-8601 time the results were written")
    config_fingerprint: str = Field(description="sha256 of what the scores depend on (resume checks it)")
    n_members: Optional[int] = Field(None, description="evaluation mode: labelled members")
    n_nonmembers: Optional[int] = Field(None, description="evaluation mode: labelled non-members")
    skipped: list[dict[str, Any]] = Field(description="files left out with data.on_error: skip: {path, reason}")
    notes: list[str] = Field(description="what the run changed or noticed (data limits, conversions, caches)")
    executor: dict[str, Any] = Field(description="the executor plugin and its params (secrets redacted)")
    n_suspects: Optional[int] = Field(None, description="copyright mode: images under test")
    n_reference: Optional[int] = Field(None, description="copyright mode: known non-members")


class GalleryItem(_Closed):
    kind: str = Field(description="most member-like | least member-like")
    image_id: str
    label: int
    score: float
    caption: Optional[str]
    original: Optional[str] = Field(None, description="PNG path relative to the run directory")
    reconstruction: Optional[str] = None
    residual: Optional[str] = None
    residual_max: Optional[float] = Field(
        None, description="largest |original - reconstruction| in [-1, 1] pixel units (the residual PNG is stretched to it)"
    )


class Roc(_Closed):
    fpr: list[float]
    tpr: list[float]  # at most 400 points


class Spent(_Closed):
    queries: int = Field(description="variation rows that reached the target (cache hits excluded)")
    nfe: int = Field(description="U-Net evaluations actually run (cached ones excluded)")


class SweepRef(_Closed):
    base: str
    values: dict[str, Any]


class AttackResult(_Open):
    """One attack entry (a sweep's grid point is one too). Keys an attack's ``describe()`` adds
    (e.g. ``variant``, ``distance``, ``statistic``) follow ``requires``."""

    plugin: str
    params: dict[str, Any]
    requires: list[str]
    scorer: dict[str, Any] = Field(description="threshold, or the learned classifier's info")
    threshold_scorer_metrics: Optional[dict[str, Metric]] = Field(
        None, description="learned scorer: the attack's own score on the same evaluation split"
    )
    components_on_evaluation: Optional[dict[str, dict[str, Metric]]] = Field(
        None, description="combining attack (ensemble): each component's metrics on the same evaluation split"
    )
    metrics: dict[str, Metric] = Field(description="auc, asr, tpr_at_1pct_fpr, tpr_at_0_1pct_fpr")
    roc: Roc
    metrics_note: Optional[str] = None
    calibrated: Optional[dict[str, Any]] = Field(None, description="evaluation mode: threshold at FPR alpha on a calibration split")
    nfe_per_image: float
    queries_per_image: float
    queries_per_image_evaluation: Optional[float] = Field(
        None, description="calibrated params (adaptive budget): queries per image on the evaluation split"
    )
    queries_histogram_evaluation: Optional[dict[str, int]] = Field(
        None, description="calibrated params (adaptive budget): evaluation images by the queries each spent"
    )
    cost_note: Optional[str] = None
    cache_hits: int
    spent: Spent
    seconds: float
    seconds_per_100_images: float
    n_members: int
    n_nonmembers: int
    extras: Optional[dict[str, Any]] = None
    gallery: list[GalleryItem]
    sweep: Optional[SweepRef] = None

    @model_serializer(mode="wrap")
    def _ordered(self, handler):  # the attack's own keys right after `requires`, as written before
        data = handler(self)
        own = [k for k in data if k not in type(self).model_fields]
        if not own:
            return data
        head = ("plugin", "params", "requires")
        out = {k: data[k] for k in head if k in data}
        out.update({k: data[k] for k in own})
        out.update({k: v for k, v in data.items() if k not in out})
        return out


class HeldOutMetrics(_Closed):
    auc: Metric
    tpr_at_1pct_fpr: Metric


class SweepPoint(_Closed):
    attack: str
    values: dict[str, Any]
    auc: Metric
    tpr_at_1pct_fpr: Metric
    queries_per_image: float
    nfe_per_image: float
    queries_per_image_evaluation: Optional[float] = Field(
        None, description="adaptive budget: queries per held-out image (its calibration images get the whole budget)"
    )
    queries_histogram_evaluation: Optional[dict[str, int]] = Field(
        None, description="adaptive budget: held-out images by the queries each spent"
    )
    held_out: Optional[HeldOutMetrics] = Field(
        None, description="runs with an adaptive budget: this point's metrics on the adaptive entries' held-out images"
    )


class SweepQueries(_Closed):
    spent: int = Field(description="queries that reached the target for all points together")
    naive: int = Field(description="what the points would cost run separately without a cache")


class SweepResult(_Closed):
    plugin: str
    params: list[str]
    points: list[SweepPoint]
    queries: SweepQueries
    pareto: list[str] = Field(description="points on the AUC-vs-cost front, cheapest first")
    pareto_cost: Literal["queries_per_image", "nfe_per_image"]


class SetInference(_Open):
    """Copyright mode, per attack (and ``combined``): the set-level test and its verdict."""

    p_value: Optional[float]
    verdict: str
    notes: Optional[list[str]] = None
    effect_auc: Optional[float] = None
    n_suspects: Optional[int] = None
    n_reference: Optional[int] = None
    alpha: Optional[float] = None
    threshold: Optional[float] = None
    flagged: Optional[int] = None
    p_adjusted: Optional[float] = Field(
        None, description="the shift-adjusted test's p-value (residuals of the score after what the blind features "
        "explain, fitted on the reference alone and cross-fitted; suspects in common support vs the reference)")


class Combined(SetInference):
    """Copyright mode's combined test and the run's conclusion (audit_core.copyright.conclusion)."""

    conclusion: Optional[Literal["evidence", "no evidence", "inconclusive"]] = Field(
        None, description="evidence only when the plain and the shift-adjusted tests both reject, with common support "
        "and no near-perfect image-only separation")
    reasons: Optional[list[str]] = Field(None, description="short sentences for the auditor; an inconclusive one says what to do next")


class Blind(_Open):
    """The model-free baseline: how well the images alone tell suspects from reference (audit_core.copyright.blind)."""

    auc: float = Field(description="cross-fitted AUC of the blind classifier (suspects vs reference)")
    ci: list[float] = Field(description="its 95 % stratified bootstrap interval")
    method: str
    folds: int
    features: list[str] = Field(description="the image statistics the classifier (and the adjustment) uses")
    overlap: float = Field(description="share of suspects in common support with the reference")


class Power(_Open):
    """How many true members a set needs (never computed by resampling the suspects)."""

    images_needed: Optional[int] = Field(description="smallest set size with 80 % power at alpha (None: more than 500)")
    assumption: str
    source: Literal["calibration", "assumed"]


class SetInferenceBlock(_Open):
    """Copyright mode's ``set_inference``: one entry per attack, ``combined``, ``blind`` and ``power``."""

    __pydantic_extra__: dict[str, SetInference] = Field(init=False)  # type: ignore[assignment]
    combined: Optional[Combined] = None
    blind: Optional[Blind] = None
    power: Optional[Power] = None
    preflight: Optional["Preflight"] = None
    sanity: Optional["Sanity"] = None

    @model_serializer(mode="wrap")
    def _ordered(self, handler):  # the attacks first, as before, then combined, blind, power, preflight, sanity
        data = handler(self)
        fixed = [k for k in ("combined", "blind", "power", "preflight", "sanity") if k in data]
        out = {k: v for k, v in data.items() if k not in fixed}
        out.update({k: data[k] for k in fixed})
        return out


class Preflight(_Open):
    """Copyright mode's data preflight (audit_core.data_preflight): suspects vs reference as files."""

    warnings: list[str] = Field(description="one line per property in which the two sets differ (format, size, mode, bit depth, JPEG quality)")
    suspects: dict[str, Any] = Field(description="formats, modes, bit depths, sizes and JPEG qualities of the suspects")
    reference: dict[str, Any] = Field(description="the same for the reference")


class Sanity(_Open):
    """Copyright mode's split-reference sanity check (audit_core.sanity, ``inference.sanity``)."""

    conclusion: str = Field(description='"no evidence" (passed), "evidence" (failed) or "not tested"')
    passed: Optional[bool]
    p_value: Optional[float] = Field(description="half of the reference tested against the other half")
    note: str


def attack_entries(si: Any) -> dict[str, dict]:
    """The per-attack entries of a ``set_inference`` block (as plain dicts)."""
    if not isinstance(si, dict):
        return {}
    return {str(k): v for k, v in si.items() if k not in SET_INFERENCE_BLOCKS and isinstance(v, dict)}


SetInferenceBlock.model_rebuild()  # its preflight and sanity fields name the two models above


class ShiftCheck(_Open):
    """A model-free suspects-vs-reference classifier on image statistics (audit_core.shift)."""

    auc: Optional[float] = Field(description="its stratified cross-validated ROC AUC (None: too few images)")
    ci: Optional[list[float]] = Field(None, description="the AUC's 95 % stratified bootstrap interval")
    note: str


class Reference(_Open):
    """Copyright mode: where the reference set came from, and how easily it is told apart."""

    generated: bool = Field(description="made by `audit reference build` (or a manifest `generator` column)")
    generator: Optional[str] = None
    generated_at: Optional[str] = None
    warning: Optional[str] = None
    shift_check: ShiftCheck


class Results(_Closed):
    """The whole results.json."""

    model_config = ConfigDict(extra="forbid", title="audit results.json")

    run: RunInfo
    environment: dict[str, Any]
    target: dict[str, Any] = Field(description="the target's describe() (secrets redacted)")
    attacks: dict[str, AttackResult]
    sweeps: Optional[dict[str, SweepResult]] = None
    set_inference: Optional[SetInferenceBlock] = None
    reference: Optional[Reference] = None


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


def assemble(run: RunInfo, environment: dict, target: dict, attacks: dict[str, AttackResult]) -> Results:
    return Results(run=run, environment=environment, target=target, attacks=attacks)  # the blocks every run has


def with_sweeps(results: Results, block: dict[str, Any], points: dict[str, tuple[str, dict]], note: str | None) -> Results:
    """Add the ``sweeps`` block (from :func:`audit_core.sweeps.summarize`), each grid point's
    ``sweep`` reference (``points``: entry name -> (base, values)) and the sharing note."""
    out = results.model_copy(deep=True)
    if not block and not points:
        return out
    out.sweeps = {k: SweepResult.model_validate(v) for k, v in block.items()}
    for name, entry in out.attacks.items():
        if name in points:
            base, values = points[name]
            entry.sweep = SweepRef(base=base, values=values)
    if note:
        out.run.notes.append(note)
    return out


def with_set_inference(results: Results, block: dict[str, Any]) -> Results:
    """Add copyright mode's ``set_inference`` block (from :func:`audit_core.inference.set_inference`)."""
    out = results.model_copy(deep=True)
    out.set_inference = SetInferenceBlock.model_validate(block)
    return out


def with_reference(results: Results, block: dict[str, Any]) -> Results:
    """Add copyright mode's ``reference`` block (from :func:`audit_core.shift.reference_block`)."""
    out = results.model_copy(deep=True)
    out.reference = Reference.model_validate(block)
    return out


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
