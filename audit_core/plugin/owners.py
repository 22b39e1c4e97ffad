"""Who registered a plugin name: the core's built-in plugin modules, the distribution (and
version) of each loaded plugin, messages naming them, and the clash policy: a name registered
by audit-core or a distribution shipped with it (``kinds.BUILTIN_DISTRIBUTIONS``) wins over a
third-party plugin's, which stays reachable by its qualified name ``<distribution>:<name>``;
a name two third-party plugins register is used by neither, except qualified. The state lives
here; ``manager.py`` fills it and re-exports these names."""

from __future__ import annotations

import difflib
from typing import Any

from .kinds import BUILTIN_DISTRIBUTIONS, SINGULAR

DEFAULT_PLUGINS = (
    "audit_core.builtins.distances",
    "audit_core.builtins.executor",
)

#: plugin name -> (distribution, version), for the plugins loaded from an installed distribution
_dist_of: dict[str, tuple[str, str]] = {}


def did_you_mean(name: str, choices: Any) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices`` (difflib), else ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def distribution(plugin_name: str) -> tuple[str, str] | None:
    """(distribution, version) of a loaded plugin, None for built-ins and in-memory plugins."""
    return _dist_of.get(plugin_name)


def origin_of(cls: type) -> str:
    """Where a plugin class comes from, for messages: ``from audit-x 0.1.0`` or
    ``registered in-process as 'name'``."""
    owner = getattr(cls, "plugin_name", "") or ""
    if owner not in _dist_of and owner not in DEFAULT_PLUGINS and cls.__module__.startswith("audit_core."):
        owner = DEFAULT_PLUGINS[0]  # a core class, whoever registered it: from audit-core
    return owner_origin(owner) if owner else f"class {cls.__module__}.{cls.__qualname__}"


def owner_origin(owner: str) -> str:
    """Where the plugin registered as ``owner`` comes from: ``from audit-x 0.1.0``, ``from
    audit-core 0.1.0`` (the core's own) or ``registered in-process as 'name'``."""
    dist = _dist_of.get(owner)
    if dist:
        return f"from {dist[0]} {dist[1]}"
    if owner in DEFAULT_PLUGINS:
        from ..base.version import __version__

        return f"from audit-core {__version__}"
    return f"registered in-process as {owner!r}"


def _who(plugin_name: str) -> str:
    dist = _dist_of.get(plugin_name)
    if plugin_name in DEFAULT_PLUGINS:  # the core's own modules: named as the distribution, not the module
        from ..base.version import __version__

        return f"'audit-core' ({__version__})"
    return f"{plugin_name!r} ({dist[0]} {dist[1]})" if dist else repr(plugin_name)


def qualifier(plugin_name: str) -> str:
    """What qualifies the names ``plugin_name`` registers (``<qualifier>:<name>``): its
    distribution, ``audit-core`` for the core's built-ins, else (an in-process plugin) its name."""
    if plugin_name in DEFAULT_PLUGINS:
        return "audit-core"
    dist = _dist_of.get(plugin_name)
    return dist[0] if dist else plugin_name


def is_builtin(plugin_name: str) -> bool:
    """Registered by audit-core or by a distribution shipped with it (``kinds.BUILTIN_DISTRIBUTIONS``)."""
    return (plugin_name in DEFAULT_PLUGINS or plugin_name in _dist_of) and qualifier(plugin_name) in BUILTIN_DISTRIBUTIONS


def _settle(kind: str, reg: Any, name: str, owners: list[str]) -> None:
    """A name several plugins register: the one built-in wins (the others are disabled for it,
    one warning); else neither is used by that name. Both ways each stays reachable qualified."""
    from ..base.terminal import warn

    what = f"{SINGULAR[kind]} {name!r}"
    builtins = [o for o in owners if is_builtin(o)]
    if len(builtins) == 1:
        others = [o for o in owners if o != builtins[0]]
        reg.shadowed[name] = others
        reg.found[name] = reg.qualified[f"{qualifier(builtins[0])}:{name}"]
        warn(
            f"{what} is registered by the built-in {_who(builtins[0])} and by {' and '.join(_who(o) for o in others)}; "
            f"the built-in one is used. To use the other, write its qualified name "
            f"{' or '.join(repr(f'{qualifier(o)}:{name}') for o in others)} where the name goes in audit.yaml."
        )
        return
    reg.found.pop(name, None)
    reg.clashes[name] = owners
    warn(
        f"{what} is registered by {' and '.join(_who(o) for o in owners)}; neither is used. Uninstall one, or load one "
        f"with AUDIT_LOAD_PLUGINS. Or pick one by its qualified name: "
        f"{' or '.join(repr(f'{qualifier(o)}:{name}') for o in owners)}."
    )
