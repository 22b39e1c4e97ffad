"""Plugin names written inside another plugin's params, resolved before any model loads: a param
of an attack that names a distance (its field is called ``distance`` or ``*_distance``, or
declares ``json_schema_extra={"plugin_kind": "distances"}``) is looked up in the config's check
step, like ``attacks[].plugin`` itself, so an unknown, ambiguous or broken distance is exit 2
naming the param's line, not a failure after the model has loaded. The value the check sees is
the user's (each value of a sweep list), else the preset's, else the field's default; a default
that depends on the target (``defaults_for``) is checked when the attack is built."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .kinds import KINDS


def _field_kind(field_name: str, info: Any) -> str | None:
    extra = getattr(info, "json_schema_extra", None)
    if isinstance(extra, dict) and extra.get("plugin_kind") in KINDS:
        return str(extra["plugin_kind"])
    if field_name == "distance" or field_name.endswith("_distance"):
        return "distances"
    return None


def named_plugins(cls: type, values: Any) -> Iterator[tuple[str, str, str]]:
    """``(param, kind, name)`` for every plugin name ``cls``'s params name, with ``values`` the
    params as written in the config."""
    fields = getattr(getattr(cls, "Params", None), "model_fields", {}) or {}
    values = values if isinstance(values, dict) else {}
    preset = (getattr(cls, "presets", None) or {}).get(values.get("preset")) if isinstance(values.get("preset"), str) else None
    for field_name, info in fields.items():
        kind = _field_kind(field_name, info)
        if kind is None:
            continue
        if field_name in values:
            value = values[field_name]
        elif isinstance(preset, dict) and field_name in preset:
            value = preset[field_name]
        else:
            value = getattr(info, "default", None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str):
                yield field_name, kind, item


def check_named_plugins(cls: type, values: Any, where: Callable[[str], str]) -> None:
    """Look up every plugin name ``cls``'s params name (see :func:`named_plugins`); a name that
    does not resolve raises the factory's ``PluginError`` (exit 2) prefixed with ``where(param)``,
    e.g. ``attacks[0].params.distance (audit.yaml, line 7)``."""
    from ..base.errors import PluginError
    from .factory import lookup
    from .kinds import SINGULAR

    for param, kind, name in named_plugins(cls, values):
        try:
            lookup(kind, name, where(param))
        except PluginError as exc:  # worded as the attack's own check says it: "unknown distance 'x'"
            what = SINGULAR[kind]
            raise PluginError(str(exc).replace(f"unknown {what} plugin {name!r}", f"unknown {what} {name!r}", 1)) from None
