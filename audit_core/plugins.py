"""The plugin manager: built-in plugins, entry points of the group ``audit``, an allow-list and
tracing.

Environment variables:

``AUDIT_LOAD_PLUGINS``
    Comma-separated names of the installed plugins to load (entry-point names or distribution
    names). Unset: load every installed plugin. Set to an empty string: load none (built-ins only).
``AUDIT_TRACE_PLUGINS``
    Set to anything non-empty to print every hook call and its results to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
from collections.abc import Callable
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

GROUP = "audit"

DEFAULT_PLUGINS = (
    "audit_core.builtins.distances",
    "audit_core.builtins.executor",
)

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_loaded = False


def _allow_list() -> set[str] | None:
    raw = os.environ.get("AUDIT_LOAD_PLUGINS")
    if raw is None:
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Load built-ins and installed plugins once; return the plugin manager."""
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
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        try:
            pm.load_setuptools_entrypoints(GROUP, name=ep.name)
        except PluginError:
            raise
        except Exception as exc:  # a broken plugin must not crash the CLI with a traceback
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value}) failed to load: {exc}") from exc
    check_pending()
    if os.environ.get("AUDIT_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


def check_pending() -> None:
    """Reject hookimpls that match no hook spec (a typo such as ``register_attack``)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements a hook that does not exist: {exc}") from exc


def get_plugins(all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
    """Every registered plugin: name, distribution, version and the hooks it implements."""
    load_plugins()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        if not all and name in DEFAULT_PLUGINS:
            continue
        info: dict[str, Any] = {
            "name": name,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
        }
        dist = dists.get(id(plugin))
        if dist is not None:
            info["distribution"] = dist.project_name
            info["version"] = dist.version
        out.append(info)
    return sorted(out, key=lambda p: p["name"])


def _collect(hook_name: str, what: str) -> dict[str, tuple[Any, str]]:
    """Call ``register_<what>`` on every plugin; map name -> (object, plugin name)."""
    load_plugins()
    found: dict[str, tuple[Any, str]] = {}
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        owner = impl.plugin_name

        def register(obj: Any, fn: Any = None, *, _owner: str = owner) -> None:
            if fn is not None:  # register(name, fn) for distances and datasets
                name, value = str(obj), fn
            else:
                name, value = getattr(obj, "name", None), obj
                if not name:
                    raise PluginError(f"plugin {_owner!r} registered a {what[:-1]} without a `name`")
            if name in found:
                raise PluginError(
                    f"{what[:-1]} {name!r} is registered twice: by {found[name][1]!r} and {_owner!r}"
                )
            if fn is None and isinstance(value, type):
                value.plugin_name = _owner
            found[name] = (value, _owner)

        impl.function(register=register)
    return found


def registry(what: str) -> dict[str, Any]:
    """``registry("attacks")`` -> {name: class}. ``what`` is targets, attacks, distances,
    reporters, executors, datasets or generators."""
    return {name: value for name, (value, _) in _collect(f"register_{what}", what).items()}


def lookup(what: str, name: str) -> Any:
    """One registered object by name, or a ``PluginError`` listing what is available."""
    reg = registry(what)
    if name not in reg:
        avail = ", ".join(sorted(reg)) or "none installed"
        raise PluginError(f"unknown {what[:-1]} plugin {name!r} (available: {avail})")
    return reg[name]


def register_commands(cli: Callable) -> None:
    load_plugins()
    pm.hook.register_commands(cli=cli)
