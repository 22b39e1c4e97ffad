"""audit.yaml's schema: the core keys as strict pydantic models (``AuditConfig`` and its
sections; a plugin's own keys are validated by the plugin's ``Params``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRef(BaseModel):
    """``{plugin: NAME, ...plugin-specific keys}``; the plugin's own schema validates the rest."""

    model_config = ConfigDict(extra="allow")
    plugin: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ExecutorCfg(PluginRef):
    plugin: str = "inprocess"


class RunCfg(Strict):
    name: str = "audit"
    # numpy and torch seed from it (negative seeds crash them); strict: `true` or `1.0` is not a seed
    seed: int = Field(0, ge=0, le=2**63 - 1, strict=True)
    device: str = "auto"
    batch_size: int | Literal["auto"] = 64  # auto: from free GPU memory (64 on the CPU)
    output: str | None = None
    executor: ExecutorCfg = Field(default_factory=ExecutorCfg)
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # every target's precision (its own dtype param wins)
    channels_last: bool = False  # NHWC memory format for the network (GPU speed; float-noise differences)
    compile: bool = False  # torch.compile the network: a slow first batch, faster after

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, v: Any) -> Any:
        if v == "auto":
            return v
        try:
            n = int(v) if not isinstance(v, bool) and float(v) == int(float(v)) else None
        except (TypeError, ValueError):
            n = None
        if n is None or not 1 <= n <= 65536:
            raise ValueError(f"must be an integer from 1 to 65536, or auto (got {v!r})")
        return n

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError("must be a non-empty name without path separators")
        return v


class TargetCfg(PluginRef):
    pass


class DataCfg(Strict):
    members: str | None = None
    nonmembers: str | None = None
    suspects: str | None = None
    reference: str | None = None
    dataset: str | None = None  # a registered dataset with a split file (paper protocol)
    root: str | None = None
    split: str | None = None
    limit: int | None = Field(None, ge=1)
    on_error: Literal["fail", "skip"] = "fail"
    max_pixels: int = Field(64_000_000, ge=1)
    follow_symlinks: bool = True

    @model_validator(mode="after")
    def _mode(self) -> DataCfg:
        evaluation = self.members is not None or self.nonmembers is not None
        copyright_ = self.suspects is not None or self.reference is not None
        if evaluation and copyright_:
            raise ValueError("use either members/nonmembers (evaluation) or suspects/reference (copyright mode), not both")
        if self.dataset is None:
            if evaluation and (self.members is None or self.nonmembers is None):
                raise ValueError("evaluation mode needs both `members` and `nonmembers`")
            if copyright_ and (self.suspects is None or self.reference is None):
                raise ValueError("copyright mode needs both `suspects` and `reference`")
            if not evaluation and not copyright_:
                raise ValueError("give `members` and `nonmembers`, or `suspects` and `reference`, or `dataset`")
        return self

    @property
    def mode(self) -> str:
        return "copyright" if self.suspects is not None else "evaluation"


class ScorerCfg(Strict):
    """``attacks[].scorer``: ``threshold`` (the attack's own score), ``classifier`` (the learned
    scorer on residual maps, the project's recipe) or ``{kind: classifier, recipe: paper}`` (the
    official code's recipe; see audit_core/scorer.py). A plain string is read as ``{kind: ...}``."""

    kind: Literal["threshold", "classifier"] = "threshold"
    recipe: Literal["default", "paper"] = "default"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _recipe_needs_classifier(self) -> ScorerCfg:
        if self.kind == "threshold" and self.recipe != "default":
            raise ValueError("a recipe applies to `kind: classifier` only")
        return self

    @model_serializer(mode="plain")
    def _compact(self) -> str | dict[str, str]:
        # the string form when the recipe is the default, so configs written before the
        # recipe existed keep their resolved form and their resume fingerprint
        return self.kind if self.recipe == "default" else {"kind": self.kind, "recipe": self.recipe}


class AttackCfg(Strict):
    plugin: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    scorer: ScorerCfg = Field(default_factory=ScorerCfg)
    seed_key: str | None = None  # set by sweep expansion so a grid shares per-image draws

    @property
    def key(self) -> str:
        return self.name or self.plugin

    def draw_key(self, registered: str | None = None) -> str:
        """What the entry's per-image seeds derive from: ``seed_key``, else its name, else the plugin
        as written, except that a qualified ``<distribution>:<registered>`` (``registered``: the
        attack class's ``name``) counts as the bare name, so qualifying a name (after a clash)
        picks the plugin without changing its draws or its scores."""
        if self.seed_key or self.name:
            return self.seed_key or self.name  # type: ignore[return-value]
        if registered and self.plugin != registered and self.plugin.endswith(":" + registered):
            return registered
        return self.plugin

    @property
    def learned(self) -> bool:
        """Whether this entry is scored by the learned classifier (``scorer.kind == classifier``)."""
        return self.scorer.kind == "classifier"


class ReportCfg(Strict):
    plugin: str
    params: dict[str, Any] = Field(default_factory=dict)


class CacheCfg(Strict):
    enabled: bool = True
    dir: str | None = None
    max_bytes: int = Field(2_000_000_000, ge=0)


class InferenceCfg(Strict):
    """Copyright-holder mode and calibrated operating points."""

    alpha: float = Field(0.01, gt=0, lt=1, allow_inf_nan=False)  # .nan: "a finite number", not "greater than 0"
    calibration_fraction: float = Field(0.2, gt=0, lt=1, allow_inf_nan=False)
    combine: Literal["rank", "bonferroni", "fisher", "none"] = "rank"
    permutations: int = Field(9999, ge=99, le=1_000_000)  # combine: rank
    # copyright mode's second stage (audit_core.two_stage): setting max_queries turns it on
    max_queries: int | None = Field(None, ge=1)  # variation rows, both stages, cache hits included
    undecided: float = Field(0.2, gt=0, lt=1, allow_inf_nan=False)  # stage 2 runs when alpha/2 < stage-1 p <= undecided
    stage2_factor: int = Field(2, ge=2, le=100)  # stage-2 n = stage2_factor x n
    # copyright mode's data preflight (audit_core.data_preflight): a file-level mismatch between
    # suspects and reference is a warning; with strict_preflight it stops the run (exit 2)
    strict_preflight: bool = False
    # copyright mode: the split-reference sanity check on the run's reference scores (audit_core.sanity)
    sanity: bool = False
    # the conclusion (audit_core.copyright.conclusion): below this share of suspects in common support with the
    # reference (blind baseline), the conclusion is "inconclusive"
    min_overlap: float = Field(0.5, gt=0, le=1)
    # ... and from this blind-baseline (or shift-check) AUC on: the images alone tell the sets apart
    max_shift_auc: float = Field(0.8, gt=0.5, le=1)
    # the power figure: the per-image AUC assumed for true members, unless a labelled calibration
    # pair (an evaluation-mode run's scores.csv or run directory, same model and attacks) measures it
    power_auc: float = Field(0.75, gt=0.5, lt=1)
    power_calibration: str | None = None


class MetricsCfg(Strict):
    # resamples for the 95 % intervals; bounded: each costs time and a few floats per metric, and
    # 10**12 would sit in the bootstrap for days with memory growing (100,000 is ample)
    bootstrap: int = Field(1000, ge=0, le=100_000)


#: attack names that results.json uses for something else
RESERVED_ATTACK_NAMES = {
    "combined": "the combined set-level test of copyright mode",
    "preflight": "copyright mode's data preflight (set_inference.preflight)",
    "sanity": "copyright mode's split-reference sanity check (set_inference.sanity)",
    "blind": "copyright mode's model-free baseline (set_inference.blind)",
    "power": "copyright mode's power figure (set_inference.power)",
}


class AuditConfig(Strict):
    run: RunCfg = Field(default_factory=RunCfg)
    target: TargetCfg
    data: DataCfg
    attacks: list[AttackCfg] = Field(min_length=1)
    reports: list[ReportCfg] = Field(default_factory=list)
    cache: CacheCfg = Field(default_factory=CacheCfg)
    inference: InferenceCfg = Field(default_factory=InferenceCfg)
    metrics: MetricsCfg = Field(default_factory=MetricsCfg)

    @model_validator(mode="after")
    def _unique_names(self) -> AuditConfig:
        seen: dict[str, int] = {}
        for i, a in enumerate(self.attacks):
            if a.key in seen:
                raise ValueError(
                    f"attacks[{seen[a.key]}] and attacks[{i}] are both named {a.key!r}: give one a distinct `name`"
                )
            seen[a.key] = i
            if a.key in RESERVED_ATTACK_NAMES:
                raise ValueError(
                    f"attacks[{i}] is named {a.key!r}, which is reserved (results.json uses it for "
                    f"{RESERVED_ATTACK_NAMES[a.key]}): give it another `name`"
                )
        return self
