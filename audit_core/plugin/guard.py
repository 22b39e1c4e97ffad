"""Calls into plugins, guarded: a plugin's failure is reported as *that plugin's* failure.

An exception raised inside an attack, target or reporter (or a wrong return value caught by the
executor) becomes one :class:`~audit_core.errors.PluginFailure` paragraph that names the plugin,
its distribution and version and what was wrong; the traceback goes to a log file (the run
directory's ``audit.log`` once the runner has set it with :func:`set_log_dir`, a temporary file
before that) and, with ``audit --debug``, to the terminal. Bad input (``AuditError``), an
interruption and an already-reported failure pass through unchanged.

The base classes (:class:`~audit_core.attacks.Attack`, :class:`~audit_core.targets.Target`)
wrap the methods a subclass defines with :func:`guarded` when the subclass is created, so plugin
authors write plain methods.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from ..base.errors import AuditError, Interrupted, PluginFailure
from ..base.terminal import _warned, warn  # noqa: F401  (warn lived here; the primitive is base's)

LOG_NAME = "audit.log"

#: set by the CLI (``audit --debug``): tracebacks of plugin failures also go to stderr
debug = bool(os.environ.get("AUDIT_DEBUG"))
_log_dir: Path | None = None

#: exceptions that are not a plugin's bug (or were already reported as one)
PASS_THROUGH = (AuditError, PluginFailure, Interrupted, KeyboardInterrupt)


def set_log_dir(path: str | Path | None) -> None:
    """Where plugin tracebacks go from now on: ``<path>/audit.log`` (None: a temporary file)."""
    global _log_dir
    _log_dir = Path(path) if path is not None else None


def log_dir() -> Path | None:
    return _log_dir


def write_log(text: str) -> Path | None:
    """Append ``text`` to the log file (secrets scrubbed); return its path (None if unwritable)."""
    from ..base.secrets import scrub

    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    body = f"--- {stamp}\n{scrub(text).rstrip()}\n"
    try:
        if _log_dir is not None and _log_dir.is_dir():
            path = _log_dir / LOG_NAME
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(body)
            return path
        fd, name = tempfile.mkstemp(prefix="audit-plugin-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
        return Path(name)
    except OSError:
        return None


# ------------------------------------------------------------------------------ naming plugins


def _base_kind(cls: type) -> str:
    """attack, target, reporter, executor, generator (the singular of the kind whose base class
    ``cls`` derives from, ``kinds.py``'s table), else plugin."""
    from .kinds import kind_of

    kind = kind_of(cls)
    return kind.singular if kind is not None else "plugin"


def who(obj: Any) -> str:
    """``attack 'bad' (plugin class 'bad' from audit-bad 0.1.0)``: what the user wrote in
    audit.yaml (the attack entry's name for attacks), the registered name and the distribution."""
    from . import manager as plugins

    cls = obj if isinstance(obj, type) else type(obj)
    kind = _base_kind(cls)
    reg_name = getattr(cls, "name", "") or cls.__name__
    label = reg_name
    ctx = getattr(obj, "context", None)
    if kind == "attack" and getattr(ctx, "name", None):
        label = ctx.name
    origin = plugins.origin_of(cls)
    plugin_part = f"plugin {reg_name!r}, " if label != reg_name else ""
    return f"{kind} {label!r} ({plugin_part}{origin})"


def failure(obj: Any, what: str, exc: BaseException | None = None, hint: str = "", resumable: bool = True) -> PluginFailure:
    """A :class:`PluginFailure` paragraph: ``<who> <what>[: Type: message]. <hint> ...``; the
    traceback of ``exc`` is logged (and printed with ``--debug``)."""
    return named_failure(who(obj), what, exc, hint, resumable)


def named_failure(label: str, what: str, exc: BaseException | None = None, hint: str = "", resumable: bool = True) -> PluginFailure:
    """:func:`failure` for a plugin named by ``label`` (a registered function, e.g. a dataset
    loader, has no class for :func:`who` to read)."""
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    msg = f"{label} {what}{detail}."
    if hint:
        msg += f" {hint}"
    msg += " This is a bug in that plugin, not in your config."
    if resumable and _log_dir is not None and _log_dir.is_dir():
        msg += f" Everything scored before it is kept in {_log_dir}; resume with --resume once the plugin is fixed."
    tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
    log = write_log(f"{msg}\n{tb}")
    if exc is not None:
        if log is not None:
            msg += f" Traceback: {log}" + ("" if debug else " (or run with --debug).")
        if debug:
            sys.stderr.write(tb)
    return PluginFailure(msg, str(log) if log else None)


# ------------------------------------------------------------------------------ wrapping


def guarded(fn, kind_what: str | None = None):
    """Wrap a plugin method: exceptions other than PASS_THROUGH become a PluginFailure naming
    the plugin (``self``) and the method."""
    if getattr(fn, "__audit_guarded__", False):
        return fn

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except PASS_THROUGH:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the plugin boundary
            raise failure(self, f"failed in {kind_what or fn.__name__}()", exc) from exc

    wrapper.__audit_guarded__ = True
    return wrapper


def guard_methods(cls: type, names: tuple[str, ...]) -> None:
    """Replace each of ``names`` that ``cls`` itself defines with its :func:`guarded` wrapper."""
    for name in names:
        fn = cls.__dict__.get(name)
        if callable(fn) and not isinstance(fn, (staticmethod, classmethod, type)):
            setattr(cls, name, guarded(fn))


class GuardedLoaders:
    """``plugins.registry("datasets")`` with every loader guarded like a plugin method: an
    exception other than bad input (``DataError``...) or a result that is not a list of
    ``ImageRecord`` is a :class:`PluginFailure` (exit 1) naming the dataset and its distribution,
    not an internal error with a traceback."""

    def __init__(self) -> None:
        from . import manager as plugins

        self._reg = plugins.registry("datasets")

    def __contains__(self, name: object) -> bool:
        return name in self._reg

    def __iter__(self):
        return iter(self._reg)

    def __len__(self) -> int:
        return len(self._reg)

    def __getitem__(self, name: str):
        from ..base.records import ImageRecord
        from . import manager as plugins
        from .owners import owner_origin

        fn = self._reg[name]
        label = f"dataset {name!r} ({owner_origin(plugins.entry('datasets', name)[1])})"

        def load(subset: str, options: dict) -> list:
            try:
                out = fn(subset, options)
                records = None if isinstance(out, (str, bytes, dict)) or out is None else list(out)
            except PASS_THROUGH:
                raise
            except Exception as exc:  # noqa: BLE001 - the plugin boundary
                raise named_failure(label, f"failed loading {subset!r}", exc, resumable=False) from exc
            bad = next((r for r in records or [] if not isinstance(r, ImageRecord)), None)
            if records is None or bad is not None:
                got = type(out).__name__ if records is None else f"a list holding a {type(bad).__name__}"
                raise named_failure(
                    label, f"returned {got} for {subset!r}", hint="A loader must return a list of ImageRecord.", resumable=False
                )
            return records

        return load
