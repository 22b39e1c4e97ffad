"""Plugin params: the strict base model of ``AttackParams``/``TargetParams`` and what a
param's annotation says (whether a list written for it is its value or a sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _members(tp: Any) -> list:
    """The alternatives of a type: ``int | None`` -> [int, NoneType]; Annotated unwrapped."""
    import typing

    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def is_list_typed(tp: Any) -> bool:
    """Whether a param's annotation takes a list-like value (``list[int]``, ``tuple[int, ...]``,
    ``Sequence[str] | None``...): a plain list written for it is its value, never a sweep."""
    import collections.abc
    import typing

    seqs = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set, collections.abc.Iterable)
    for m in _members(tp):
        origin = typing.get_origin(m) or m
        if isinstance(origin, type) and issubclass(origin, seqs) and not issubclass(origin, (str, bytes)):
            return True
    return False


def _yaml_natural(tp: Any, value: Any) -> Any:
    """A YAML value in the Python type strict mode wants where YAML has no such type: a list
    for a tuple/set, a string for a Path or an Enum. Anything else is left to validation."""
    import enum
    import typing

    members = _members(tp)
    if isinstance(value, list):
        for m in members:
            origin = typing.get_origin(m) or m
            if origin in (tuple, set, frozenset):
                return origin(value)
    if isinstance(value, str) and str not in members:
        for m in members:
            if isinstance(m, type) and issubclass(m, Path):
                return Path(value)
            if isinstance(m, type) and issubclass(m, enum.Enum):
                try:
                    return m(value)
                except ValueError:
                    return value
    return value


class PluginParams(BaseModel):
    """Base of ``AttackParams`` and ``TargetParams``: unknown keys are errors and types are
    strict (``"2"`` or ``true`` is not an int; an int is a float), with YAML's natural forms
    kept (a list for a tuple, a string for a Path or an Enum). A field that should be lenient
    says so: ``Field(..., strict=False)``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, f in cls.model_fields.items():
            key = f.alias or name
            if key in out:
                out[key] = _yaml_natural(f.annotation, out[key])
        return out
