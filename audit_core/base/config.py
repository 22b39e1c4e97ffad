"""audit.yaml: loading (load_yaml: strict, bounded), validation (pydantic) with errors that name the key and
the line, and ``--set dotted.key=value`` overrides."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .errors import ConfigError
from .secrets import redact  # noqa: F401  (the one redaction rule, also used from here)


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


# --- loading with line numbers ------------------------------------------------------------------


#: nodes a config may have once aliases are expanded (every use of an alias counts its whole
#: subtree): an 800-byte "billion laughs" alias bomb is refused before anything is expanded
MAX_YAML_NODES = 200_000


#: flow collections (``[``/``{``) nested deeper than this are refused before parsing: PyYAML's
#: scanner is quadratic in the flow depth (3000 levels take seconds, 100 000 hours)
MAX_FLOW_DEPTH = 100


def _flow_depth(text: str, limit: int) -> int | None:
    """The 1-based line where ``[``/``{`` nest deeper than ``limit`` (quoted strings and comments
    skipped), or None. A linear pre-scan; close enough to YAML's rules to bound the real parser."""
    depth, line, quote, prev = 0, 1, "", "\n"
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        if quote == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = ""
        elif quote == "'":
            if ch == "'":
                quote = ""
        elif quote == "#":
            if ch == "\n":
                quote = ""
        elif ch in "\"'" and (prev in " \t\n[{,:" or depth):
            quote = ch
        elif ch == "#" and prev in " \t\n":
            quote = "#"
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
        prev = ch
        i += 1
    return None


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader; composition is checked (``_check_nodes``) before any object is built."""


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"{source}{where}: broken YAML: {problem}")


def _check_nodes(root: yaml.Node, source: str) -> dict[tuple, int]:
    """Walk the composed YAML once (an aliased node is entered once, so this is linear in the
    text) and return the line map: each key path (tuple of str/int) -> its 1-based line.

    Refused with a ConfigError naming the lines: a key repeated in one mapping (YAML says keys
    are unique; PyYAML would silently keep the last), more than ``MAX_YAML_NODES`` nodes once
    aliases are expanded, a recursive alias, a NUL character in a value."""
    lines: dict[tuple, int] = {}
    sizes: dict[int, int] = {}  # id(node) -> expanded size, once known
    open_: set[int] = set()  # nodes being walked (an alias back to one of them is recursive)
    total = 0

    def walk(node: yaml.Node, path: tuple) -> int:
        nonlocal total
        lines.setdefault(path, node.start_mark.line + 1)
        key = id(node)
        if key in sizes:  # an alias of a node already walked: count its expansion, don't re-walk
            total += sizes[key]
            if total > MAX_YAML_NODES:
                raise ConfigError(
                    f"{source}, line {node.start_mark.line + 1}: aliases expand to more than {MAX_YAML_NODES} "
                    f"YAML nodes (an alias bomb?); write the values out or use fewer aliases"
                )
            return sizes[key]
        if key in open_:
            raise ConfigError(f"{source}, line {node.start_mark.line + 1}: a recursive YAML alias (a value that contains itself)")
        open_.add(key)
        total += 1
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{source}: more than {MAX_YAML_NODES} YAML nodes (with aliases expanded)")
        size = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges, by design
                        size += walk(v, path)
                        continue
                    if "\x00" in k.value:
                        raise ConfigError(f"{source}, line {k.start_mark.line + 1}: a key contains a NUL character")
                    ident = (k.tag, k.value)
                    if ident in seen:
                        raise ConfigError(
                            f"{source}, lines {seen[ident]} and {k.start_mark.line + 1}: duplicate key "
                            f"{dotted((*path, k.value))!r} (YAML keys must be unique; the second would silently "
                            f"replace the first). Remove or merge one of them."
                        )
                    seen[ident] = k.start_mark.line + 1
                    child = (*path, k.value)
                    lines[child] = k.start_mark.line + 1
                else:
                    child = (*path, "?")
                    size += walk(k, child)
                size += walk(v, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                size += walk(v, (*path, i))
        elif isinstance(node, yaml.ScalarNode) and "\x00" in node.value:
            raise ConfigError(
                f"{dotted(path)} ({source}, line {node.start_mark.line + 1}): contains a NUL character, which no "
                f"name, path or value may hold"
            )
        open_.discard(key)
        sizes[key] = size
        return size

    walk(root, ())
    return lines


def load_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """``(data, line map)`` of a YAML text, bounded and strict (see ``_check_nodes``): duplicate
    keys, alias bombs, recursive aliases, NUL characters and nesting too deep for the parser
    are ConfigErrors naming the source and line, before any Python object is built."""
    deep = _flow_depth(text, MAX_FLOW_DEPTH)
    if deep is not None:
        raise ConfigError(f"{source}, line {deep}: brackets nested deeper than {MAX_FLOW_DEPTH} levels")
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader already refuses control characters
        root = loader.get_single_node()  # composition only: aliases are shared nodes here
        if root is None:
            return None, {}
        lines = _check_nodes(root, source)
        return loader.construct_document(root), lines
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _refuse_nul(obj: Any, path: tuple, lines: dict[tuple, int], source: str, depth: int = 0) -> None:
    """ConfigError naming the key when a key or string value holds a NUL character (no name,
    path or value may: the OS refuses such paths with a ValueError deep inside the run)."""
    if depth > 100:
        return
    if isinstance(obj, str) and "\x00" in obj:
        raise ConfigError(f"{dotted(path)} ({_where(path, lines, source)}): contains a NUL character, which no name, path or value may hold")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _refuse_nul(k, path, lines, source, depth + 1)
            _refuse_nul(v, (*path, k), lines, source, depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _refuse_nul(v, (*path, i), lines, source, depth + 1)


def _line_map(text: str) -> dict[tuple, int]:
    """Map each key path (tuple of str/int) to its 1-based line in the YAML text ({} when the
    text is not a valid, bounded YAML document)."""
    try:
        return load_yaml(text, "<yaml>")[1]
    except ConfigError:
        return {}


def _where(path: tuple, lines: dict[tuple, int | str], source: str) -> str:
    """``source, line N`` of the closest enclosing key; a key set on the command line maps to
    its ``--set key=value`` argument instead (it is not in the file)."""
    probe = tuple(path)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    if isinstance(line, str):
        return line
    return f"{source}, line {line}" if line else source


def _model_at(model: Any, loc: tuple) -> Any:
    """The pydantic model that holds the key at ``loc`` (None when unknown): walks fields,
    list items and Optional/Annotated wrappers of ``model``."""
    import typing

    def models_in(tp: Any) -> list:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        return [m for a in typing.get_args(tp) for m in models_in(a)]

    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # a list index: the item type was already taken from the field
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        found = models_in(fields[part].annotation)
        if not found:
            return None
        current = found[0]
    return current


def _unknown_key(model: Any, loc: tuple, owner: str | None = None) -> str:
    """``unknown key; did you mean 'members'? valid keys: ...`` for an extra key at ``loc``
    (``owner``, e.g. ``attack plugin 'pia'``, says whose keys they are)."""
    holder = _model_at(model, loc) if model is not None else None
    fields = list(getattr(holder, "model_fields", {}) or {})
    fields = [f for f in fields if f != "seed_key"]  # set by sweep expansion, not by users
    # an attack's own params first; ``preset`` (a named set of them, attacks.resolve_params) after
    fields = [f for f in fields if f != "preset"] + [f for f in fields if f == "preset"]
    if not fields:
        return "unknown key"
    import difflib

    close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    of = f" of {owner}" if owner and len(loc) == 1 else ""
    return f"unknown key{hint} valid keys{of}: {', '.join(fields)}"


def dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def format_validation_error(
    exc: ValidationError, lines: dict[tuple, int | str], source: str, prefix: tuple = (), model: Any = None,
    owner: str | None = None,
) -> str:
    """One line per error: ``dotted.key (file, line N): what is wrong``. ``model`` is the schema
    that was validated (default: the whole audit.yaml's), for the valid keys of an unknown one."""
    if model is None and not prefix:
        model = AuditConfig
    msgs = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = (*prefix, *loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(model, loc, owner)
        elif err["type"] == "missing":
            msg = "required key is missing"
        msgs.append(f"{dotted(path)} ({_where(path, lines, source)}): {msg}")
    return "invalid config: " + "; ".join(msgs)


def resolve_path(p: str | Path, base_dir: str | Path | None) -> Path:
    """A path written in audit.yaml: ``~`` expanded; relative paths are relative to ``base_dir``
    (the audit.yaml's folder) when it is known, else to the working directory."""
    path = Path(p).expanduser()
    return path if path.is_absolute() or not base_dir else Path(base_dir) / path


class LoadedConfig:
    """The validated config plus what error messages need (source name, line map)."""

    def __init__(self, cfg: AuditConfig, raw: dict, lines: dict[tuple, int], source: str, base_dir: Path):
        self.cfg = cfg
        self.raw = raw
        self.lines = lines
        self.source = source
        self.base_dir = base_dir

    def where(self, *path: Any) -> str:
        return _where(tuple(path), self.lines, self.source)

    def path(self, p: str | Path) -> Path:
        """A path from the config: ``~`` expanded, relative to the config file's folder."""
        return resolve_path(p, self.base_dir)

    def run_dir(self) -> Path:
        """The configured run directory: ``run.output``, else ``reports/<run.name>``."""
        return self.path(self.cfg.run.output) if self.cfg.run.output else Path("reports") / self.cfg.run.name

    def validate_params(self, model: type[BaseModel], values: dict, path: tuple, owner: str | None = None) -> BaseModel:
        """Validate a plugin's params with the plugin's own schema; errors name key and line."""
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, self.lines, self.source, path, model=model, owner=owner)) from None


def parse_value(value: str) -> Any:
    """A command-line value read as YAML (numbers, booleans, lists); text YAML cannot read stays
    text, and an empty value is the empty string."""
    try:
        return load_yaml(value, "--set value")[0] if value.strip() else ""
    except ConfigError as exc:
        if "broken YAML" in str(exc):
            return value
        raise


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {item!r}: empty key")
    return key.strip().split("."), parse_value(value)


def apply_overrides(raw: dict, overrides: list[str], lines: dict[tuple, int | str] | None = None) -> dict:
    """``raw`` with every ``--set dotted.key=value`` applied. With ``lines`` (the file's line
    map), each overridden key maps to its ``--set`` argument, so errors blame the command line."""
    data = copy.deepcopy(raw)
    for item in overrides or []:
        parts, value = parse_override(item)
        node: Any = data
        key: tuple = ()  # the path as the line map spells it (list indices as int)
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a valid list index") from None
                key += (int(part),)
                continue
            key += (part,)
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            del nxt
        last = parts[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError(f"--set {item!r}: {last!r} is not a valid list index") from None
            key += (int(last),)
        else:
            node[last] = value
            key += (last,)
        if lines is not None:
            blame = f"--set {item}"
            for k in [k for k in lines if k[: len(key)] == key]:
                lines[k] = blame  # the file's value (and anything under it) was replaced
            lines[key] = blame
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> LoadedConfig:
    p = Path(path)
    source = str(p)
    if not p.exists():
        raise ConfigError(f"config file {source} does not exist")
    if p.is_dir():
        raise ConfigError(f"config {source} is a folder, not a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {source} cannot be read: {exc}") from None
    return load_config_text(text, source, p.resolve().parent, overrides)


def load_config_text(text: str, source: str, base_dir: Path, overrides: list[str] | None = None) -> LoadedConfig:
    raw, lines = load_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (run, target, data, attacks, reports)")
    raw = apply_overrides(raw, overrides or [], lines)
    _refuse_nul(raw, (), lines, source)  # --set values that are not YAML arrive here as raw text
    try:
        cfg = AuditConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, lines, source)) from None
    return LoadedConfig(cfg, raw, lines, source, base_dir)


REPORT_ONLY_KEYS = ("reports",)


def fingerprint(cfg: AuditConfig) -> str:
    """Hash of everything that changes scores (report options and run.output excluded)."""
    data = cfg.model_dump(mode="json")
    for key in REPORT_ONLY_KEYS:
        data.pop(key, None)
    data["run"].pop("output", None)
    data["run"].pop("batch_size", None)  # scores do not depend on batching
    data["run"].pop("executor", None)  # nor on the executor
    data.pop("cache", None)
    data.pop("metrics", None)
    data.pop("inference", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
