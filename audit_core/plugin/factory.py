"""The one factory every plugin object is made through: look a plugin up by kind and name
(:func:`lookup`: a did-you-mean, the installed choices, and why a name is missing when a plugin
is broken or two plugins register it), validate its params (:func:`validate`: errors name the
key, its line and the valid keys), create it (:func:`construct`: a failure in its constructor is
the plugin's), or all three (:func:`build`). Reached as ``audit_core.plugins.build`` etc."""

from __future__ import annotations

from typing import Any

from ..base.errors import PluginError
from .kinds import SINGULAR, missing_methods
from .manager import _broken, _collect, _who, broken, did_you_mean, entry, origin_of, qualifier, resolve


def unknown_message(what: str, name: str, where: str | None = None) -> str:
    """Why ``name`` is not a usable ``what`` plugin: did-you-mean, the installed choices, a
    clash or broken plugins that may have provided it."""
    reg = _collect(what)
    kind = SINGULAR.get(what, what)
    head = f"{where}: " if where else ""
    if name in reg.clashes:
        return (
            f"{head}{kind} plugin {name!r} is registered twice, by {' and '.join(_who(o) for o in reg.clashes[name])}, "
            f"so neither is used. Uninstall one of them, or load only one with AUDIT_LOAD_PLUGINS, or write the "
            f"qualified name of the one you mean: {' or '.join(repr(f'{qualifier(o)}:{name}') for o in reg.clashes[name])}."
        )
    avail = ", ".join(sorted(reg.found)) or "none installed"
    choices = [*reg.found, *reg.qualified] if ":" in str(name) else list(reg.found)
    msg = f"{head}unknown {kind} plugin {name!r}.{did_you_mean(name, choices)} Plugins installed: {avail}."
    if ":" in str(name):
        msg += f" Qualified names (<distribution>:<name>): {', '.join(sorted(reg.qualified))}."
    if _broken:
        bad = "; ".join(
            f"{b.name} ({b.distribution} {b.version}: {b.reason})" if b.distribution else f"{b.name} ({b.reason})"
            for b in broken()
        )
        msg += f" Disabled because they are broken (one may provide {name!r}): {bad}."
    return msg


def lookup(what: str, name: str, where: str | None = None) -> Any:
    """One registered object by name (imported now if it was registered by reference, see
    ``lazyref.py``), or a ``PluginError`` (exit 2) with a did-you-mean, the installed choices,
    and clashes or broken plugins that explain a missing name, or naming the plugin whose
    reference failed to load. ``where`` prefixes the message (e.g. ``attacks[0].plugin
    (audit.yaml, line 9)``). ``name`` may be qualified, ``<distribution>:<name>``; a class
    that lacks a method its kind requires (``kinds.py``) is refused naming the method."""
    if entry(what, name) is None:  # a bare name, or a qualified one: <distribution>:<name>
        raise PluginError(unknown_message(what, name, where))
    obj = resolve(what, name, where)  # imports a plugin registered by reference (checked there)
    missing = missing_methods(what, obj)
    if missing:  # registered as the class itself: its methods are checked here, before any model loads
        head = f"{where}: " if where else ""
        cls = f" (class {obj.__module__}.{obj.__qualname__}, {origin_of(obj)})" if isinstance(obj, type) else ""
        raise PluginError(
            f"{head}{SINGULAR.get(what, what)} plugin {name!r}{cls} cannot be used: it does not implement "
            f"{'; nor '.join(missing)}. This is a bug in that plugin, not in your config."
        )
    return obj


def validate(cls: type, values: dict, config: Any = None, at: tuple = (), label: str | None = None) -> Any:
    """``cls.Params`` validated from ``values``; errors (exit 2) name the key, its line (with a
    loaded config; ``at`` is where the params sit in it) and the valid keys."""
    from pydantic import ValidationError

    from ..base.config import format_validation_error

    owner = f"{SINGULAR.get(_kind_of(cls), 'plugin')} plugin {getattr(cls, 'name', '')!r}"
    if config is not None:
        return config.validate_params(cls.Params, values, at, owner=owner)
    try:
        return cls.Params.model_validate(values)
    except ValidationError as exc:
        from ..base.errors import ConfigError

        text = format_validation_error(exc, {}, label or "params", at or ("params",), model=cls.Params, owner=owner)
        kind = SINGULAR.get(_kind_of(cls), "plugin")
        raise ConfigError(f"{kind} {getattr(cls, 'name', '')!r}: {text.removeprefix('invalid config: ')}") from None


def construct(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args)``; an exception that is not bad input becomes a PluginFailure naming it."""
    from .guard import PASS_THROUGH, failure

    try:
        return cls(*args, **kwargs)
    except PASS_THROUGH:
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin boundary
        raise failure(cls, "failed while being created", exc) from exc


def build(
    what: str,
    name: str,
    values: dict,
    *args: Any,
    config: Any = None,
    at: tuple = (),
    params_at: tuple | None = None,
    where: str | None = None,
) -> Any:
    """The factory: look up ``name`` among the ``what`` plugins, validate ``values`` with its
    ``Params``, and create it as ``cls(params, *args)``. With a loaded ``config``, ``at`` is the
    entry's path in it (``("attacks", 0)``) and ``params_at`` where its params sit (default
    ``at + ("params",)``); without one, ``where`` names the source in messages."""
    if config is not None:
        from ..base.config import dotted

        where = f"{dotted((*at, 'plugin'))} ({config.where(*at, 'plugin')})"
    cls = lookup(what, name, where)
    params = validate(cls, values, config, (*at, "params") if params_at is None else params_at, label=where)
    return construct(cls, params, *args)


def _kind_of(cls: type) -> str:
    """The plural of ``cls``'s kind (``kinds.py``'s table), else ``plugins``."""
    from .kinds import kind_of

    kind = kind_of(cls)
    return kind.plural if kind is not None else "plugins"


def lookup_plugin(what: str, name: str, path: tuple, where: str) -> Any:
    """The registered plugin class ``name`` of kind ``what`` (targets, attacks, executors,
    reporters), or a ConfigError naming the config key (``path``), where it was written and the
    installed choices (with a did-you-mean, and why a name is missing when a plugin is broken or
    two register it). Every plugin the runner and ``audit report`` build is looked up here."""
    from ..base.config import dotted

    return lookup(what, name, where=f"{dotted(path)} ({where})")
