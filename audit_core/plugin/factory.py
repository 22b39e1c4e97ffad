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
    hint = did_you_mean(name, choices)
    if not hint and ":" in str(name):  # a wrong qualifier of a name that exists: the qualified names it has
        bare = str(name).split(":", 1)[1]
        same = sorted(q for q in reg.qualified if q.split(":", 1)[1] == bare)
        hint = f" Did you mean {' or '.join(repr(q) for q in same)}?" if same else ""
    msg = f"{head}unknown {kind} plugin {name!r}.{hint} Plugins installed: {avail}."
    if ":" in str(name):
        msg += f" Qualified names (<distribution>:<name>): {', '.join(sorted(reg.qualified))}."
    if _broken:
        bad = "; ".join(
            f"{b.name} ({b.distribution} {b.version}: {b.reason})" if b.distribution else f"{b.name} ({b.reason})"
            for b in broken()
        )
        msg += f" Disabled because they are broken (one may provide {name!r}): {bad}."
    return msg


def unknown_dataset(name: str) -> str:
    """:func:`unknown_message` for a dataset name (``data.dataset`` or ``builtin:NAME/...``)."""
    return unknown_message("datasets", name)


def load_data(cfg_data: Any, base_dir: Any) -> Any:
    """The records of a config's ``data:`` section (``LoadedData``), read through the dataset
    plugins, each guarded (``guard.GuardedLoaders``), a dataset name worded like any plugin name."""
    from ..data import load_records
    from .guard import GuardedLoaders

    return load_records(cfg_data, base_dir, GuardedLoaders(), unknown_dataset)


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


def _strict(model: type) -> type:
    """``model`` itself when it refuses unknown keys, else a subclass that does: every kind's
    params are strict, a third-party ``Params`` that forgot ``extra="forbid"`` included (the
    errors then name the unknown key and the valid keys like any other)."""
    if model.model_config.get("extra") == "forbid":
        return model
    strict = _STRICT.get(model)
    if strict is None:
        strict = type(model.__name__, (model,), {"model_config": {**model.model_config, "extra": "forbid"}, "__module__": model.__module__})
        _STRICT[model] = strict
    return strict


_STRICT: dict[type, type] = {}


def _owner(cls: type) -> str:
    return f"{SINGULAR.get(_kind_of(cls), 'plugin')} plugin {getattr(cls, 'name', '')!r}"


def validate(cls: type, values: Any, config: Any = None, at: tuple = (), label: str | None = None) -> Any:
    """``cls.Params`` validated from ``values`` (an instance of it is returned as it is). The
    one wording of a param error (exit 2): ``KEY (WHERE): what is wrong`` naming the key, its line
    (with a loaded ``config``; ``at`` is where the params sit in it) or ``label`` (the command-line
    option or caller it came from), and for an unknown key a did-you-mean and the valid keys.
    Unknown keys are refused for every kind, also when a ``Params`` class allows them."""
    from pydantic import ValidationError

    from ..base.config import format_validation_error
    from ..base.errors import ConfigError

    model = cls.Params
    if isinstance(values, model):
        return values
    values = dict(values or {})
    strict = _strict(model)
    if config is not None:
        checked = config.validate_params(strict, values, at, owner=_owner(cls))
    else:
        try:
            checked = strict.model_validate(values)
        except ValidationError as exc:
            text = format_validation_error(exc, {}, label or "params", at or ("params",), model=strict, owner=_owner(cls))
            raise ConfigError(text) from None  # the same wording as a config file's (header, key, place)
    return checked if strict is model else model.model_validate(values)


def resolve_values(cls: type, values: dict, target: Any = None, config: Any = None, at: tuple = (), label: str | None = None) -> dict:
    """The param values to validate for ``cls``: the target-dependent defaults
    (``cls.defaults_for(target)``, attacks), then the named preset's values (``params.preset``),
    then the given values, which always win. Presets and defaults are applied here and nowhere
    else. An unknown preset is a ConfigError naming ``params.preset``'s line (or ``label``) and
    the presets there are."""
    from ..base.errors import ConfigError

    values = dict(values or {})
    out: dict[str, Any] = {}
    if target is not None and callable(getattr(cls, "defaults_for", None)):
        out.update(cls.defaults_for(target))
    if "preset" in values and hasattr(cls, "presets"):
        try:
            check_preset(cls, values)
        except ConfigError as exc:
            place = config.where(*at, "preset") if config is not None else (label or "params")
            from ..base.config import dotted

            raise ConfigError(f"{dotted((*at, 'preset')) if at else 'params.preset'} ({place}): {exc}") from None
        if values.get("preset") is not None:
            out.update(cls.presets[values["preset"]])
    return {**out, **values}


def check_preset(cls: type, values: dict) -> None:
    """Raise ConfigError, naming the available presets, when ``values['preset']`` is not one of
    ``cls.presets`` (no target needed: checked before the model loads)."""
    from ..base.errors import ConfigError

    name = (values or {}).get("preset")
    presets = getattr(cls, "presets", {}) or {}
    if name is not None and (not isinstance(name, str) or name not in presets):
        avail = ", ".join(sorted(presets)) or "none"
        raise ConfigError(f"unknown preset {name!r} for {_owner(cls)} (presets: {avail})".replace(" plugin plugin", " plugin"))


def construct(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args)``; an exception that is not bad input becomes a PluginFailure naming it."""
    from .guard import PASS_THROUGH, failure

    try:
        return cls(*args, **kwargs)
    except PASS_THROUGH:
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin boundary
        raise failure(cls, "failed while being created", exc) from exc


def checked(obj: Any, where: str | None = None) -> Any:
    """``obj`` after its ``check()`` (an attack's: params against the target); a ConfigError it
    raises is prefixed with ``where`` (the params' key and line)."""
    from ..base.errors import ConfigError

    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ConfigError as exc:
            if where is None:
                raise
            raise ConfigError(f"{where}: {exc}") from None
    return obj


def build(what: str, name: Any, values: Any, *args: Any, **kw: Any) -> Any:
    """THE way a plugin object is made: look up ``name`` among the ``what`` plugins (or take the
    class already looked up), resolve its values (:func:`resolve_values`: the target's defaults,
    then the preset, then ``values``; an already validated ``Params`` instance is used as it
    is), validate them with its ``Params`` (:func:`validate`) and create it as
    ``cls(params, *args)`` (:func:`construct`). Keywords: with a loaded ``config``, ``at`` is
    the entry's path in it (``("attacks", 0)``) and ``params_at`` where its params sit (default
    ``at + ("params",)``); without one, ``where`` names the source in messages; ``target`` (for
    an attack's target-dependent defaults); ``check``: run the object's ``check()`` (an
    attack's), a ConfigError from it prefixed with the params' place (or with ``check`` itself
    when it is a string); ``requires``: an access level (``VARIATION``...) the class must offer
    (a PluginError before anything is created). :func:`build_with_params` also returns the validated params."""
    return build_with_params(what, name, values, *args, **kw)[1]


def build_with_params(
    what: str,
    name: Any,
    values: Any,
    *args: Any,
    config: Any = None,
    at: tuple = (),
    params_at: tuple | None = None,
    where: str | None = None,
    target: Any = None,
    check: bool | str = False,
    requires: str | None = None,
) -> tuple[Any, Any]:
    """``(params, object)``: :func:`build`, with the validated params it was created from."""
    from ..base.config import dotted

    p_at = (*at, "params") if params_at is None else params_at
    if isinstance(name, type):
        cls = name
    else:
        if config is not None:
            where = f"{dotted((*at, 'plugin'))} ({config.where(*at, 'plugin')})"
        cls = lookup(what, name, where)
    if requires is not None and requires not in getattr(cls, "capabilities", ()):
        from .targets import ACCESS_NAMES

        need = ACCESS_NAMES.get(requires, requires).split(" (")[0]
        raise PluginError(f"{SINGULAR.get(what, what)} {getattr(cls, 'name', name)!r} has no {need} to serve")
    if not isinstance(values, cls.Params):
        values = resolve_values(cls, values, target, config, p_at, label=where)
    params = validate(cls, values, config, p_at, label=where)
    obj = construct(cls, params, *args)
    if check:
        place = check if isinstance(check, str) else (
            f"{dotted(p_at)} ({config.where(*p_at)})" if config is not None else where
        )
        checked(obj, place)
    return params, obj


def with_params(cls: type, params: Any, updates: dict, *args: Any, where: str | None = None, check: bool = True) -> tuple[Any, Any]:
    """``(params, object)``: the plugin ``cls`` (already looked up) created anew with ``params``
    updated by ``updates`` (an attack's calibrated params, its second-stage budget) and the same
    constructor arguments ``args``: validated with the one wording and checked; every ConfigError
    is prefixed with ``where`` (what asked for the update)."""
    from ..base.errors import ConfigError

    try:
        new = validate(cls, {**params.model_dump(), **updates}, label="updated params")
        obj = construct(cls, new, *args)
        if check:
            checked(obj)
    except ConfigError as exc:
        if where is None:
            raise
        raise ConfigError(f"{where}: {exc}") from None
    return new, obj


def validate_written(cls: type, values: dict, config: Any = None, at: tuple = (), label: str | None = None) -> None:
    """Check params as written, before the target exists: every error but a missing key (the
    target's defaults may fill it in later) is raised with the one wording."""
    from pydantic import ValidationError

    try:
        _strict(cls.Params).model_validate(dict(values or {}))
    except ValidationError as exc:
        if any(e["type"] != "missing" for e in exc.errors()):
            validate(cls, values, config, at, label)  # raises, naming the key and its line


#: the public name of :func:`build` (``audit_core.build_plugin``)
build_plugin = build


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
