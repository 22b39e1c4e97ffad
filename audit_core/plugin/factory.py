"""The one factory every plugin object is made through: look a plugin up by kind and name
(:func:`lookup`: a did-you-mean, the installed choices, and why a name is missing when a plugin
is broken or two plugins register it), validate its params (:func:`validate`: errors name the
key, its line and the valid keys), create it (:func:`construct`: a failure in its constructor is
the plugin's), or all three (:func:`build`). Reached as ``audit_core.plugins.build`` etc."""

from __future__ import annotations

from typing import Any

from ..base.errors import PluginError
from .manager import SINGULAR, _broken, _collect, _who, broken, did_you_mean, resolve


def unknown_message(what: str, name: str, where: str | None = None) -> str:
    """Why ``name`` is not a usable ``what`` plugin: did-you-mean, the installed choices, a
    clash or broken plugins that may have provided it."""
    reg = _collect(what)
    kind = SINGULAR.get(what, what)
    head = f"{where}: " if where else ""
    if name in reg.clashes:
        return (
            f"{head}{kind} plugin {name!r} is registered twice, by {' and '.join(_who(o) for o in reg.clashes[name])}, "
            f"so neither is used. Uninstall one of them, or load only one with AUDIT_LOAD_PLUGINS."
        )
    avail = ", ".join(sorted(reg.found)) or "none installed"
    msg = f"{head}unknown {kind} plugin {name!r}.{did_you_mean(name, reg.found)} Plugins installed: {avail}."
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
    (audit.yaml, line 9)``)."""
    if name in _collect(what).found:
        return resolve(what, name, where)  # imports a plugin registered by reference
    raise PluginError(unknown_message(what, name, where))


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
    from .guard import _base_kind

    k = _base_kind(cls)
    return f"{k}s" if k != "plugin" else "plugins"


def lookup_plugin(what: str, name: str, path: tuple, where: str) -> Any:
    """The registered plugin class ``name`` of kind ``what`` (targets, attacks, executors,
    reporters), or a ConfigError naming the config key (``path``), where it was written and the
    installed choices (with a did-you-mean, and why a name is missing when a plugin is broken or
    two register it). Every plugin the runner and ``audit report`` build is looked up here."""
    from ..base.config import dotted

    return lookup(what, name, where=f"{dotted(path)} ({where})")
