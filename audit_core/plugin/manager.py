"""The plugin manager: built-in plugins, entry points of the group ``audit``, an allow-list,
tracing, the registries by kind (``register_*`` hooks called through pluggy; objects registered
by ``"module:attr"`` reference are imported on first use, see ``lazyref.py``), broken plugins
disabled (not fatal) and name clashes: a built-in name wins over a third-party plugin's, which
stays reachable by its qualified name ``<distribution>:<name>``; names two third-party plugins
register are used by neither, except qualified. The kinds are ``kinds.py``'s table; the listing
behind ``audit plugins`` is ``listing.py`` (re-exported here). The factory
(:func:`lookup`, :func:`validate`, :func:`construct`, :func:`build`) is in ``factory.py`` and
re-exported here.

Environment variables:

``AUDIT_LOAD_PLUGINS``
    Comma-separated names of the installed plugins to load (entry-point names or distribution
    names). Unset: load every installed plugin. Set to an empty string: load none (built-ins only).
``AUDIT_TRACE_PLUGINS``
    Set to anything non-empty to print every hook call (``register_attacks`` included) and its
    results to stderr.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata as md
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from ..base.errors import Interrupted, PluginError
from .kinds import KINDS, SINGULAR  # noqa: F401  (KINDS, SINGULAR: old names, kinds.py's table)
from .lazyref import LazyRef, RefError, _a, is_ref
from .owners import (  # noqa: F401  (the old names of manager.py)
    DEFAULT_PLUGINS, _dist_of, _settle, _who, did_you_mean, distribution, is_builtin, origin_of, qualifier,
)

GROUP = "audit"

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("register_"))

_loaded = False


@dataclass
class Broken:
    """A plugin disabled at load or registration time, and why."""

    name: str  # entry-point (or registration) name
    distribution: str | None
    version: str | None
    reason: str


@dataclass
class Registry:
    """What ``register_<kind>`` yielded: name -> (object, owner plugin); names two third-party
    plugins registered (used by neither by that name); names a built-in won, with the
    third-party plugins disabled for them (``shadowed``); and every registration by its
    qualified name ``<distribution>:<name>``."""

    found: dict[str, tuple[Any, str]] = field(default_factory=dict)
    clashes: dict[str, list[str]] = field(default_factory=dict)
    shadowed: dict[str, list[str]] = field(default_factory=dict)
    qualified: dict[str, tuple[Any, str]] = field(default_factory=dict)


_broken: dict[str, Broken] = {}
_registries: dict[str, tuple[tuple, Registry]] = {}  # kind -> (plugins it was built from, registry)


def _allow_list() -> set[str] | None:
    raw = os.environ.get("AUDIT_LOAD_PLUGINS")
    if raw is None:
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


def _disable(name: str, dist: str | None, version: str | None, reason: str, quiet: bool = False) -> None:
    """Record a broken plugin and warn once, naming its distribution (``quiet``: the caller
    raises an error that says it all)."""
    from ..base.terminal import warn

    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    _broken[name] = Broken(name, dist, version, reason)
    if quiet:
        return
    where = f"distribution {dist} {version}" if dist else "not from an installed distribution"
    warn(f"plugin {name!r} ({where}) is disabled: {reason}. Other plugins keep working; see `audit plugins`.")


def unknown_hooks(plugin: Any) -> list[str]:
    """The hookimpls of ``plugin`` that match no hook spec, each with the closest real hook."""
    out = []
    for attr in dir(plugin):
        try:
            opts = pm.parse_hookimpl_opts(plugin, attr)
        except Exception:  # noqa: BLE001 - an odd attribute is not a hookimpl
            opts = None
        if opts is not None and attr not in HOOKS:
            close = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.6)
            out.append(f"{attr!r} is not a hook" + (f" (did you mean {close[0]!r}?)" if close else f" (the hooks: {', '.join(HOOKS)})"))
    return out


def validate_plugin(plugin: Any, name: str) -> None:
    """Refuse a plugin with a hookimpl that matches no hook spec (a typo such as
    ``register_attack``), naming the closest real hook."""
    bad = unknown_hooks(plugin)
    if bad:
        raise PluginError(f"plugin {name!r} implements a hook that does not exist: {'; '.join(bad)}")


def load_plugins() -> pluggy.PluginManager:
    """Load built-ins and installed plugins once; return the plugin manager. A plugin that
    cannot be imported, implements a hook that does not exist or does not match a hook's
    signature is disabled with a warning; the others keep working."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), name=module_name)
    allowed = _allow_list()
    for ep in md.entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            _disable(ep.name, dist, version, f"importing {ep.value} failed ({type(exc).__name__}: {exc})")
            continue
        try:
            validate_plugin(plugin, ep.name)
            pm.register(plugin, name=ep.name)
        except (PluginError, pluggy.PluginValidationError) as exc:
            reason = " ".join(str(exc).split())  # pluggy's signature errors span lines
            _disable(ep.name, dist, version, reason.replace(f"plugin {ep.name!r} ", "it ", 1))
            continue
        if dist:
            _dist_of[ep.name] = (dist, version or "")
    if os.environ.get("AUDIT_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


def check_pending() -> None:
    """Reject registered hookimpls that match no hook spec (used for in-memory plugins)."""
    for plugin in pm.get_plugins():
        validate_plugin(plugin, pm.get_name(plugin))


# ------------------------------------------------------------------------------ registries


def _collect(kind: str) -> Registry:
    """Call ``register_<kind>`` through pluggy, one plugin at a time (so tracing shows every
    call and one plugin's failure costs only that plugin). Cached until plugins change."""
    load_plugins()
    # the key holds the plugin objects themselves: an id alone can be reused by a new object
    key = tuple((pm.get_name(p), p) for p in pm.get_plugins())
    cached = _registries.get(kind)
    if cached is not None and len(cached[0]) == len(key) and all(
        a[0] == b[0] and a[1] is b[1] for a, b in zip(cached[0], key)
    ):
        return cached[1]
    hook_name = f"register_{kind}"
    reg = Registry()
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    seen: dict[str, list[tuple[str, Any]]] = {}  # name -> (owner, object) of every registration
    for impl in impls:
        owner = impl.plugin_name
        items: list[tuple[str, Any, bool]] = []

        def register(obj: Any, fn: Any = None, *, _owner: str = owner) -> None:
            if is_ref(fn):  # register(name, "module:attr"): imported on first use (lazyref.py)
                items.append((str(obj), LazyRef(kind, str(obj), fn, _owner), False))
                return
            if fn is not None:  # register(name, fn) for distances and datasets
                items.append((str(obj), fn, False))
                return
            name = getattr(obj, "name", None)
            if not name:
                raise PluginError(f"it registered {_a(SINGULAR[kind])} without a `name` ({obj!r})")
            items.append((name, obj, True))

        others = [i.plugin for i in impls if i.plugin is not impl.plugin]
        try:
            pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a broken plugin is disabled, not fatal
            dist = _dist_of.get(owner, (None, None))
            reason = str(exc) if isinstance(exc, (PluginError, RefError)) else f"{hook_name} raised {type(exc).__name__}: {exc}"
            _disable(owner, dist[0], dist[1], reason)
            return _collect(kind)  # the plugin set changed
        for name, value, is_class in items:
            if is_class and isinstance(value, type):
                value.plugin_name = owner
            if all(v is not value for _, v in seen.get(name, [])):
                seen.setdefault(name, []).append((owner, value))
            reg.found.setdefault(name, (value, owner))
            reg.qualified.setdefault(f"{qualifier(owner)}:{name}", (value, owner))
    for name, regs in seen.items():
        if len(regs) > 1:  # a built-in wins; else neither is used, and a run that needs it says why
            _settle(kind, reg, name, [o for o, _ in regs])
    _registries[kind] = (key, reg)
    return reg


def entry(what: str, name: str) -> tuple[Any, str] | None:
    """(object or reference, owner) registered as ``name``, a bare name or a qualified one
    (``<distribution>:<name>``); None if there is none."""
    reg = _collect(what)
    return reg.found.get(name) or reg.qualified.get(name)


def resolve(what: str, name: str, where: str | None = None) -> Any:
    """The object registered as ``name`` (bare or qualified; ``KeyError`` if none), its module
    imported now when it was registered by reference. A reference that fails to load disables the plugin that
    registered it (listed by :func:`broken`; no separate warning) and raises a ``PluginError``
    (exit 2) naming the plugin, its distribution and what was wrong; ``where`` prefixes it."""
    found = entry(what, name)
    if found is None:
        raise KeyError(name)
    value, owner = found
    if not isinstance(value, LazyRef):
        return value
    try:
        obj = value.load()
    except RefError as exc:
        dist = _dist_of.get(owner, (None, None))
        _disable(owner, dist[0], dist[1], str(exc), quiet=True)
        head = f"{where}: " if where else ""
        raise PluginError(
            f"{head}{SINGULAR[what]} plugin {name!r} cannot be used: plugin {_who(owner)} is broken: {exc}. "
            f"Other plugins keep working; see `audit plugins`."
        ) from None
    if isinstance(obj, type):
        obj.plugin_name = owner
    return obj


class RegistryView(Mapping):
    """What :func:`registry` returns: the names of one kind, each object imported when it is
    first read (``view[name]``); ``name in view``, iterating and ``len`` import nothing."""

    def __init__(self, what: str, names: list[str]):
        self._what, self._names = what, names

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return resolve(self._what, name)

    def __contains__(self, name: object) -> bool:  # Mapping's default would read (import) the value
        return name in self._names or (isinstance(name, str) and name in _collect(self._what).qualified)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __reduce__(self):  # pickled (e.g. to a worker process) as the plain dict it stands for,
        # with the qualified names of the registrations no bare name reaches (clashes, shadowed)
        reg = _collect(self._what)
        hidden = [q for q, (_, owner) in reg.qualified.items() if reg.found.get(q.split(":", 1)[1], (None, None))[1] != owner]
        names = [*self._names, *hidden]
        return (dict, ({n: self[n] for n in names},))

    def __repr__(self) -> str:
        return f"RegistryView({self._what!r}, {self._names!r})"


def registry(what: str) -> Mapping[str, Any]:
    """``registry("attacks")`` -> {name: class}, a read-only mapping whose objects are imported
    on first access (see :class:`RegistryView`). ``what`` is targets, attacks, distances,
    reporters, executors, datasets or generators. Names two third-party plugins registered are
    left out (see :func:`clashes`); a qualified name ``<distribution>:<name>`` may be read too."""
    return RegistryView(what, list(_collect(what).found))


def clashes(what: str) -> dict[str, list[str]]:
    """Names registered by more than one third-party plugin (used by neither): name -> the plugins."""
    return dict(_collect(what).clashes)


def shadowed(what: str) -> dict[str, list[str]]:
    """Names a built-in won: name -> the third-party plugins disabled for it (reachable qualified)."""
    return dict(_collect(what).shadowed)


def broken() -> list[Broken]:
    """Plugins disabled because they failed to load or register."""
    load_plugins()
    return sorted(_broken.values(), key=lambda b: b.name)


_commands_added: list[Any] = []  # the plugins whose register_commands has run (once each per process)


def register_commands(cli: Callable) -> None:
    """Add the commands of every registered plugin not added yet: called on every CLI call, so a
    plugin hidden when the CLI first ran (a test under ``isolated``) gets its commands later."""
    load_plugins()
    current = pm.get_plugins()
    new = [p for p in current if not any(p is q for q in _commands_added)]
    if new:
        _commands_added.extend(new)
        pm.subset_hook_caller("register_commands", remove_plugins=[p for p in current if p not in new])(cli=cli)


@contextlib.contextmanager
def isolated(keep: tuple[str, ...] = ()) -> Iterator[pluggy.PluginManager]:
    """Within the block only the built-ins (and plugins named in ``keep``) are registered:
    a test sees exactly the plugins it registers itself. Restored afterwards."""
    load_plugins()
    saved = [(pm.get_name(p), p) for p in pm.get_plugins() if pm.get_name(p) not in DEFAULT_PLUGINS and pm.get_name(p) not in keep]
    saved_broken = dict(_broken)
    for name, _ in saved:
        pm.unregister(name=name)
    _broken.clear()
    try:
        yield pm
    finally:
        for name, plugin in saved:
            if pm.get_plugin(name) is None and not pm.is_blocked(name):
                pm.register(plugin, name=name)
        _broken.clear()
        _broken.update(saved_broken)


# the factory (lookup / validate / construct / build / unknown_message) lives in factory.py, which
# imports this module; the old spelling ``audit_core.plugins.build`` still works, with a warning
_FACTORY = ("build", "construct", "lookup", "unknown_message", "validate")


def __getattr__(name: str) -> Any:
    if name == "get_plugins":  # the listing lives in listing.py (which imports this module)
        return importlib.import_module("audit_core.plugin.listing").get_plugins
    if name in _FACTORY:
        import warnings

        warnings.warn(f"audit_core.plugins.{name} moved to audit_core.plugin.factory.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("audit_core.plugin.factory"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GROUP", "KINDS", "pm", "load_plugins", "registry", "resolve", "clashes",
    "broken", "get_plugins", "did_you_mean", "origin_of", "distribution", "isolated", "shadowed", "qualifier",
]
