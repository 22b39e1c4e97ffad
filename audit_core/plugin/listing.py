"""The listing behind ``audit plugins``: per plugin its distribution, version, hooks and the names
it registers per kind (as written in audit.yaml), plus disabled (``broken``) plugins, names
another plugin registers too (``clashes``: used by neither; ``shadowed``: a built-in won), the
qualified names that reach them, and the required methods a registered class lacks
(``problems``, from ``kinds.py``'s table). Names only: a class registered by reference is not
imported here (it is checked when first used, see ``lazyref.py``)."""

from __future__ import annotations

from typing import Any

from .kinds import KINDS, SINGULAR, missing_methods
from .lazyref import LazyRef
from .manager import DEFAULT_PLUGINS, _collect, _dist_of, _who, broken, load_plugins, pm, qualifier


def _problems(kind: str, name: str, value: Any) -> list[str]:
    """What an eagerly registered object lacks (a reference is checked on first use)."""
    if isinstance(value, LazyRef):
        return []
    where = f" ({value.__module__}.{value.__qualname__})" if isinstance(value, type) else ""
    return [f"{SINGULAR[kind]} {name!r}{where} does not implement {m}" for m in missing_methods(kind, value)]


def get_plugins(all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
    """Every plugin: name, distribution, version, the hooks it implements and the names it
    registers per kind (as written in audit.yaml), plus disabled (``broken``) plugins, names
    another plugin registers too (``clashes``, ``shadowed``; ``qualified``: the names that reach
    this plugin's; ``picks``: per clashing name, e.g. ``"attack 'x'"``, the qualified names to choose from) and missing required methods (``problems``). The core's built-in plugins
    only with ``all``."""
    load_plugins()
    registers: dict[str, dict[str, list[str]]] = {}
    notes: dict[str, dict[str, list[str]]] = {}  # owner -> clashes / shadowed / qualified / problems
    picks: dict[str, dict[str, list[str]]] = {}  # owner -> "attack 'x'" -> the qualified names that pick one

    def note(owner: str, key: str, text: str) -> None:
        notes.setdefault(owner, {}).setdefault(key, []).append(text)

    for kind in KINDS:
        reg = _collect(kind)
        what = SINGULAR[kind]
        for qname, (value, owner) in reg.qualified.items():
            name = qname[len(qualifier(owner)) + 1:]
            registers.setdefault(owner, {}).setdefault(kind, []).append(name)
            for problem in _problems(kind, name, value):
                note(owner, "problems", problem)
        for name, (_, owner) in reg.found.items():
            registers.setdefault(owner, {}).setdefault(kind, []).append(name)
        for name, owners in reg.clashes.items():
            for owner in owners:
                registers.setdefault(owner, {}).setdefault(kind, []).append(name)
                others = [o for o in owners if o != owner]
                note(owner, "clashes", f"{what} {name!r} also registered by {', '.join(others)}")
                note(owner, "qualified", f"{qualifier(owner)}:{name}")
                picks.setdefault(owner, {})[f"{what} {name!r}"] = [f"{qualifier(o)}:{name}" for o in owners]
        for name, owners in reg.shadowed.items():
            winner = reg.found[name][1]
            for owner in owners:
                registers.setdefault(owner, {}).setdefault(kind, []).append(name)
                note(owner, "shadowed", f"{what} {name!r} is the built-in one of {_who(winner)}; this one is disabled for that name")
                note(owner, "qualified", f"{qualifier(owner)}:{name}")
                picks.setdefault(owner, {})[f"{what} {name!r}"] = [f"{qualifier(owner)}:{name}"]
    out = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        if not all and name in DEFAULT_PLUGINS:
            continue
        info: dict[str, Any] = {
            "name": name,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            "registers": {k: sorted(set(v)) for k, v in sorted(registers.get(name, {}).items(), key=lambda kv: KINDS.index(kv[0]))},
        }
        dist = _dist_of.get(name)
        if dist is not None:
            info["distribution"], info["version"] = dist
        elif name in DEFAULT_PLUGINS:
            from ..base.version import __version__

            info["distribution"], info["version"] = "audit-core", __version__
        info.update(notes.get(name, {}))
        if name in picks:
            info["picks"] = picks[name]
        out.append(info)
    for b in broken():
        info = {"name": b.name, "hooks": [], "registers": {}, "broken": b.reason}
        if b.distribution:
            info["distribution"], info["version"] = b.distribution, b.version
        out.append(info)
    return sorted(out, key=lambda p: p["name"])


def builtin_row(plugins: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The core's built-in plugins (``DEFAULT_PLUGINS``: the distances, the inprocess executor)
    of a ``get_plugins(all=True)`` listing merged into one ``built-in`` entry."""
    mine = [p for p in plugins if p["name"] in DEFAULT_PLUGINS]
    if not mine:
        return None
    registers: dict[str, list[str]] = {}
    for p in mine:
        for kind, names in p["registers"].items():
            registers.setdefault(kind, []).extend(names)
    order = sorted(registers, key=KINDS.index)
    return {
        "name": "built-in", "distribution": mine[0].get("distribution"), "version": mine[0].get("version"),
        "hooks": sorted({h for p in mine for h in p["hooks"]}), "registers": {k: sorted(registers[k]) for k in order},
    }
