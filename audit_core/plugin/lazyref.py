"""Lazy registration: a plugin registers a name and a ``"module:attribute"`` reference instead of
the object itself, and the module is imported the first time the name is used (looked up, built,
validated). Listing plugins (``audit plugins``) and ``audit --help`` then import no attack or
target module, and with them neither torch nor diffusers. In a hook::

    @hookimpl
    def register_attacks(register):
        register("pia", "audit_pia.attack:PIA")      # imported when an audit.yaml selects `pia`

The reference is checked twice. When it is registered: it must read ``package.module:Name``
and the module must exist (found with :func:`importlib.util.find_spec`, which imports its parent
packages but not the module). When it is first used: the module must import, the attribute must
exist and be the right kind (a subclass of the kind's base class, whose ``name`` is the registered
name and which implements the methods its kind requires, see ``kinds.py``; a callable for
distances and datasets). A failure is a :class:`RefError` whose message
says what the reference points at and what was wrong; the plugin manager disables the plugin that
registered it, like any plugin whose hook fails (``plugins.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from typing import Any

from .kinds import BASES, SINGULAR, missing_methods  # noqa: F401  (BASES: the old name, kinds.py's table)

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_FORM = re.compile(rf"^({_DOTTED}):({_DOTTED})$")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


class RefError(Exception):
    """A reference that cannot serve as a plugin: malformed, missing, failing or of the wrong
    kind. The message completes ``plugin 'x' is disabled: ...``."""


def is_ref(value: Any) -> bool:
    """Whether ``register(name, value)`` was given a reference (a string) rather than an object."""
    return isinstance(value, str)


class LazyRef:
    """``name`` of ``kind`` (``"attacks"``, ...), provided by ``target`` (``"module:attribute"``)
    and registered by the plugin ``owner``; :meth:`load` imports it once and remembers the
    outcome, a failure included."""

    __slots__ = ("kind", "name", "target", "owner", "_value", "_error")

    def __init__(self, kind: str, name: str, target: str, owner: str):
        self.kind, self.name, self.target, self.owner = kind, name, target, owner
        self._value: Any = None
        self._error: str | None = None
        self.check()

    @property
    def what(self) -> str:
        """``attack 'pia'``: the kind (singular) and the registered name, for messages."""
        return f"{SINGULAR.get(self.kind, self.kind)} {self.name!r}"

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def check(self) -> None:
        """The reference's form, and that its module exists, without importing the module."""
        match = _FORM.match(self.target)
        if not match:
            raise RefError(
                f"its {self.what} is registered as {self.target!r}, which is not a reference of the form "
                f"'package.module:Name'"
            )
        module = match.group(1)
        try:
            spec = importlib.util.find_spec(module)
        except Exception as exc:  # noqa: BLE001 - a parent package that fails to import
            raise RefError(f"its {self.what} points at {self.target}, whose package cannot be imported ({type(exc).__name__}: {exc})") from None
        if spec is None:
            raise RefError(f"its {self.what} points at {self.target}, but there is no module {module!r}")

    def load(self) -> Any:
        """The object the reference names, imported on the first call; :class:`RefError` when it
        cannot be imported or is not a ``kind`` plugin named ``name``."""
        if self._value is not None:
            return self._value
        if self._error is not None:
            raise RefError(self._error)
        try:
            self._value = self._import()
        except RefError as exc:
            self._error = str(exc)
            raise
        return self._value

    def _import(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - whatever the module raises, it is the plugin's
            raise RefError(f"its {self.what} points at {self.target}, which cannot be imported ({type(exc).__name__}: {exc})") from None
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except Exception as exc:  # noqa: BLE001 - AttributeError, or a module __getattr__ that fails
                detail = f"{module_name} has no attribute {attr!r}" if isinstance(exc, AttributeError) else f"{type(exc).__name__}: {exc}"
                raise RefError(f"its {self.what} points at {self.target}, which cannot be loaded ({detail})") from None
        self._check_kind(obj)
        return obj

    def _check_kind(self, obj: Any) -> None:
        base_at = BASES.get(self.kind)
        if base_at is None:  # distances and datasets are functions
            if not callable(obj):
                raise RefError(f"its {self.what} points at {self.target}, which is {_a(type(obj).__name__)}, not a function")
            return
        module, cls_name = base_at
        base = getattr(importlib.import_module(module), cls_name)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            got = f"the class {obj.__module__}.{obj.__qualname__}" if isinstance(obj, type) else _a(type(obj).__name__)
            raise RefError(f"its {self.what} points at {self.target}, which is {got}, not a subclass of {module}.{cls_name}")
        if getattr(obj, "name", None) != self.name:
            raise RefError(
                f"its {self.what} points at {self.target}, whose name is {getattr(obj, 'name', None)!r}: "
                f"register it under that name, or set `name = {self.name!r}` on the class"
            )
        missing = missing_methods(self.kind, obj)
        if missing:
            raise RefError(f"its {self.what} points at {self.target}, which does not implement {'; nor '.join(missing)}")

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else ("broken" if self._error else "not loaded")
        return f"<LazyRef {self.what} -> {self.target} ({state})>"
