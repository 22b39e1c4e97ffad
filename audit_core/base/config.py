"""audit.yaml: loading (``load_yaml`` in ``base/yamlfile.py``: strict, bounded), validation against the
schema (``base/schema.py``) with errors that name the key and the line, ``--set dotted.key=value``
overrides, and the fingerprint. The schema's models and the YAML loader are importable from here too."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .schema import (  # noqa: F401  (the schema lived here)
    RESERVED_ATTACK_NAMES, AttackCfg, AuditConfig, CacheCfg, DataCfg, ExecutorCfg, InferenceCfg, MetricsCfg, PluginRef,
    ReportCfg, RunCfg, ScorerCfg, Strict, TargetCfg,
)
from .secrets import redact  # noqa: F401  (the one redaction rule, also used from here)
from .yamlfile import (  # noqa: F401  (the loader lived here)
    MAX_FLOW_DEPTH, MAX_YAML_NODES, _BoundedLoader, _check_nodes, _flow_depth, _line_map, _refuse_nul, _where, _yaml_error,
    dotted, load_yaml,
)


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
        return f"unknown key; {owner} takes no params" if owner and len(loc) == 1 and holder is not None else "unknown key"
    import difflib

    close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    of = f" of {owner}" if owner and len(loc) == 1 else ""
    return f"unknown key{hint} valid keys{of}: {', '.join(fields)}"


def format_validation_error(
    exc: ValidationError, lines: dict[tuple, int | str], source: str, prefix: tuple = (), model: Any = None,
    owner: str | None = None,
) -> str:
    """One line per error: ``dotted.key (file, line N): what is wrong``. ``model`` is the schema
    that was validated (default: the whole audit.yaml's), for the valid keys of an unknown one."""
    if model is None and not prefix:
        model = AuditConfig
    by_path: dict[tuple, list[str]] = {}
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        while loc and isinstance(loc[-1], str) and _UNION_TAG.fullmatch(loc[-1]):
            loc = loc[:-1]  # which branch of `int | "auto"` failed: one message for the key, its branches joined
        path = (*prefix, *loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(model, loc, owner)
        elif err["type"] == "missing":
            msg = "required key is missing"
        if msg not in by_path.setdefault(path, []):
            by_path[path].append(msg)
    msgs = [f"{dotted(path)} ({_where(path, lines, source)}): {', or '.join(m)}" for path, m in by_path.items()]
    return "invalid config: " + "; ".join(msgs)


#: the tags pydantic adds to an error's location for the branch of a union that failed
_UNION_TAG = re.compile(r"constrained-\w+|literal\[.*\]|int|float|str|bool|none|is-instance\[.*\]|list\[.*\]|dict\[.*\]|tuple\[.*\]")


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
