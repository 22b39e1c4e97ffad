"""The one table of plugin kinds: per kind (``attacks``, ``targets``, ...) its singular, the base
class every class of that kind derives from (a ``"module:Class"`` string, None for the kinds that
register functions: distances and datasets) and the methods a class of that kind must implement.
The plugin manager, registration by reference, the guard and the factory all read this table
(``manager.KINDS``/``SINGULAR``, ``lazyref.BASES``, ``guard._base_kind``, ``factory._kind_of``).

It also names the distributions that ship with audit-core (:data:`BUILTIN_DISTRIBUTIONS`): a name
one of them registers wins over a third-party plugin registering the same name (see
``manager.py``). Torch-free: importing it imports no base class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Need:
    """A class of the kind must override one of ``methods`` of its base class (``when``: only
    when the class declares that capability, for targets)."""

    methods: tuple[str, ...]
    when: str | None = None
    unless: str | None = None  # ... and does not declare this one

    def applies(self, capabilities: set[str]) -> bool:
        return (self.when is None or self.when in capabilities) and (self.unless is None or self.unless not in capabilities)

    def text(self, kind: str) -> str:
        names = " or ".join(f"{m}()" for m in self.methods)
        if self.when is None:
            return f"{names} (required of every {kind})"
        but = f" but not {self.unless!r}" if self.unless else ""
        return f"{names} (required of a {kind} with the capability {self.when!r}{but})"


@dataclass(frozen=True)
class Kind:
    plural: str
    singular: str
    base: str | None  # "module:Class"; None: the kind registers functions
    needs: tuple[Need, ...] = ()

    @property
    def base_module(self) -> str | None:
        return self.base.partition(":")[0] if self.base else None

    @property
    def base_name(self) -> str | None:
        return self.base.partition(":")[2] if self.base else None


#: every kind, in the order ``audit plugins`` lists them
TABLE: tuple[Kind, ...] = (
    Kind("attacks", "attack", "audit_core.plugin.attacks:Attack", (Need(("score",)),)),
    Kind(
        "targets",
        "target",
        "audit_core.plugin.targets:Target",
        (
            Need(("eps",), when="noise"),
            # the base class's variation API runs DDIM on eps: a variation-only target may serve it that way
            Need(("_variations", "_variation", "variation", "eps"), when="variation", unless="noise"),
            Need(("grad_network",), when="gradients"),
        ),
    ),
    Kind("distances", "distance", None),
    Kind("reporters", "reporter", "audit_core.run.reporting:Reporter", (Need(("render",)),)),
    Kind("executors", "executor", "audit_core.run.executors:Executor", (Need(("run",)),)),
    Kind("datasets", "dataset", None),
    Kind("generators", "generator", "audit_core.plugin.generators:Generator", (Need(("generate",)),)),
)

BY_PLURAL: dict[str, Kind] = {k.plural: k for k in TABLE}
KINDS: tuple[str, ...] = tuple(k.plural for k in TABLE)
SINGULAR: dict[str, str] = {k.plural: k.singular for k in TABLE}
#: kind -> (module, class) of the base class, for the kinds that register classes
BASES: dict[str, tuple[str, str]] = {k.plural: (k.base_module, k.base_name) for k in TABLE if k.base}  # type: ignore[misc]

#: the distributions shipped with audit-core (its own built-ins and the plugins/ folder of its
#: repository): a name one of them registers wins over a third-party plugin's (tests/test_kinds.py
#: checks this against plugins/*/pyproject.toml)
BUILTIN_DISTRIBUTIONS: frozenset[str] = frozenset({
    "audit-core",
    "audit-clid", "audit-datasets", "audit-ddim", "audit-dit", "audit-ensemble", "audit-gradio", "audit-gsa",
    "audit-html-report", "audit-http", "audit-naive-loss", "audit-pfami", "audit-pia", "audit-ray",
    "audit-rediffuse", "audit-secmia", "audit-sima", "audit-stable-diffusion", "audit-torch-callable",
})


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def kind_of(cls: type) -> Kind | None:
    """The kind whose base class ``cls`` derives from (None: no plugin kind), found by walking
    its MRO for the base's ``module:Class``, so no base class is imported."""
    bases = {k.base: k for k in TABLE if k.base}
    for klass in getattr(cls, "__mro__", ()):
        kind = bases.get(_qualname(klass))
        if kind is not None:
            return kind
    return None


def missing_methods(kind: str, obj: Any) -> list[str]:
    """What ``obj`` (a class registered as ``kind``) lacks: each required method it does not
    override, as ``score() (required of every attack)``; for a function kind, ``not callable``.
    Empty when nothing is missing, or when ``obj`` is not a class of the kind (checked elsewhere)."""
    k = BY_PLURAL.get(kind)
    if k is None:
        return []
    if k.base is None:
        return [] if callable(obj) else [f"a callable (a {k.singular} is a function, not {type(obj).__name__})"]
    if not isinstance(obj, type):
        return []
    base = next((c for c in obj.__mro__ if _qualname(c) == k.base), None)
    if base is None:
        return []
    try:
        caps = {str(c) for c in (getattr(obj, "capabilities", None) or ())}
    except TypeError:  # not iterable: the target's own checks say so
        caps = set()
    out = []
    for need in k.needs:
        if need.applies(caps) and not any(_overrides(obj, base, m) for m in need.methods):
            out.append(need.text(k.singular))
    return out


def _overrides(cls: type, base: type, method: str) -> bool:
    """Whether some class between ``cls`` and ``base`` (exclusive) defines ``method``."""
    for klass in cls.__mro__:
        if klass is base:
            return False
        if method in klass.__dict__:
            return True
    return False
