"""results.json's typed models: the contract for reporters and other tools
(``docs/results.schema.json`` is generated from them, ``docs/results.md`` explains every field).
The functions that fill them are :mod:`audit_core.stats.results`' (per-attack and run blocks) and
:mod:`audit_core.run.assemble`'s (the one place the whole results.json is put together)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from ..base.records import SET_INFERENCE_BLOCKS


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
