"""The run plan: everything a run needs, built ONCE before the first query by :func:`make_plan`
in five numbered steps, then immutable (a frozen :class:`RunPlan`). The Runner builds it and
keeps it; the second stage, the shift check, the results assembler, reporting and executors get
the plan or the pieces of it they need, never the Runner.

1. **check inputs** (nothing loaded, nothing written): every plugin the config names exists (each
   class looked up once, here), params as written (sweeps expanded), the output folder, the data,
   and copyright mode's config checks (second stage, file preflight, power calibration);
2. **resolve plugins**: the query cache, the target (its model loads here, through the factory),
   the batch size, the conditions, and every attack built through the factory (the target's
   defaults, the preset, the user's values; access checked, ``check()`` run);
3. **validate** what needs them together: the components of combining entries;
4. **estimate cost and memory**: the second stage's query budget (what each attack states it
   costs, never its param names) and the preflight checks (set sizes, memory, identical sets);
5. **plan the jobs**: the executor and reporters, the fingerprint, the resume policy, the
   settings the stored scores depend on, and the order the attacks run in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import console as term
from . import data_preflight, preflight, sweeps
from .batching import resolve_batch_size
from .rundir import check_placement, check_run_dir, resume_policy, settings_changed
from ..base import secrets
from ..base.config import LoadedConfig, dotted, fingerprint as config_fingerprint
from ..base.errors import ConfigError, ResumeError
from ..copyright import conclusion, rescore
from ..data import ImageLoader, LoadedData
from ..data.cache import QueryCache
from ..plugin import factory, manager as plugins
from ..plugin.names import check_named_plugins
from ..plugin.attacks import AttackContext, check_access
from ..plugin.prepared import PreparedAttack
from ..plugin.targets import TargetContext
from ..stats import combine


@dataclass(frozen=True)
class RunPlan:
    """One run, as planned: built once by :func:`make_plan`, never changed afterwards."""

    loaded: LoadedConfig
    run_dir: Path
    data: LoadedData
    sweeps: dict
    sweep_note: str | None
    cache: Any
    target: Any
    target_cls: type
    target_params: Any
    target_context: dict
    batch_size: int
    conditions: dict
    images: ImageLoader
    attacks: list  # PreparedAttack, config order
    order: tuple  # the attacks in the order they run (each sweep's largest point first)
    second: Any  # rescore.SecondStage or None
    executor: Any
    reporters: list
    fingerprint: str
    discard_state: bool
    score_settings: dict
    calibration_ids: tuple
    data_preflight: Any = None
    power_calibration: Any = None
    notes: list = field(default_factory=list)

    @property
    def cfg(self) -> Any:
        return self.loaded.cfg

    @property
    def mode(self) -> str:
        return self.data.mode


def where(loaded: LoadedConfig, *path: Any) -> str:
    """``dotted.key (file, line N)``."""
    return f"{dotted(path)} ({loaded.where(*path)})"


# ------------------------------------------------------------------ step 1: check inputs
@dataclass(frozen=True)
class Inputs:
    """What step 1 found: the plugin classes (each looked up once) with their params as
    written, the sweeps and the attack entries, the run folder and the data."""

    target_cls: type
    target_params: Any
    sweeps: dict
    entries: list  # (config index, AttackCfg) per entry, grid points expanded
    attack_classes: dict  # config index -> class
    executor: tuple  # (class, params)
    reporters: list  # (class, params)
    run_dir: Path
    data: LoadedData
    data_preflight: Any
    power_calibration: Any


def check_inputs(loaded: LoadedConfig, output: Any, load_data: Callable[[], LoadedData], console: Any) -> Inputs:
    """Step 1: every plugin name first (a typo costs no model load), then the params as written,
    the output folder and the data files; nothing is loaded or written."""
    cfg = loaded.cfg
    secrets.register_config(loaded.raw)  # scrubbed from everything the run writes

    def look(what: str, name: str, *path: Any) -> type:
        return factory.lookup(what, name, where=where(loaded, *path))

    tcls = look("targets", cfg.target.plugin, "target", "plugin")
    acls = {i: look("attacks", a.plugin, "attacks", i, "plugin") for i, a in enumerate(cfg.attacks)}
    for i, a in enumerate(cfg.attacks):  # distances named in the params, before any model loads
        check_named_plugins(acls[i], a.params, lambda p, i=i: f"attacks[{i}].params.{p} ({loaded.where('attacks', i, 'params', p)})")
    ecls = look("executors", cfg.run.executor.plugin, "run", "executor", "plugin")
    rcls = [look("reporters", r.plugin, "reports", i, "plugin") for i, r in enumerate(cfg.reports)]
    tparams = factory.validate(tcls, cfg.target.options(), loaded, ("target",))
    # list-valued params expand into one entry per grid point (i stays the config index)
    found, entries = sweeps.expand(cfg.attacks, lambda i, a: acls[i], loaded)
    for i, acfg in entries:
        _precheck_attack(loaded, i, acfg, acls[i], tcls)
    eparams = factory.validate(ecls, cfg.run.executor.options(), loaded, ("run", "executor"))
    reporters = [(c, factory.validate(c, r.params, loaded, ("reports", i, "params"))) for i, (c, r) in enumerate(zip(rcls, cfg.reports))]
    run_dir = Path(output) if output is not None else loaded.run_dir()
    check_run_dir(run_dir)  # a folder of the user's files is refused before anything is loaded
    check_placement(run_dir, _data_folders(loaded), _cache_dir(loaded))
    data = load_data()
    rescore.check_config(loaded, data.mode, entries)  # before the model loads
    # copyright mode: suspects vs reference compared as files (format, size, mode, bit depth,
    # JPEG quality); warns, or with inference.strict_preflight refuses, before the model loads
    checked_files = data_preflight.check(loaded, data, console)
    power = conclusion.check_config(loaded, data.mode)
    return Inputs(tcls, tparams, found, entries, acls, (ecls, eparams), reporters, run_dir, data, checked_files, power)


def _precheck_attack(loaded: LoadedConfig, i: int, acfg: Any, acls: type, tcls: type) -> None:
    """What can be checked of an attack entry before the target exists: its access needs (a
    target class declares its capabilities), the scorer, the preset and its params as written
    (params the target's defaults fill in may be missing here)."""
    check_access(acls, tcls, acfg.key)
    if acfg.learned and not acls.residual_maps:
        raise ConfigError(
            f"attacks[{i}].scorer ({loaded.where('attacks', i, 'scorer')}): attack {acfg.key!r} "
            f"(plugin {acfg.plugin!r}) yields no residual maps, so `scorer: classifier` cannot be used"
        )
    at = ("attacks", i, "params")
    factory.resolve_values(acls, acfg.params, None, loaded, at)  # an unknown preset, naming its line
    factory.validate_written(acls, acfg.params, loaded, at)


def _data_folders(loaded: LoadedConfig) -> dict[str, Path]:
    """The data folders the config names (``data.members``... and a dataset's ``data.root``)."""
    d = loaded.cfg.data
    keys = ("members", "nonmembers", "suspects", "reference", "root")
    return {f"data.{k}": loaded.path(getattr(d, k)) for k in keys if getattr(d, k)}


def _cache_dir(loaded: LoadedConfig) -> Path | None:
    """The query cache's folder when the cache is on (``cache.dir``, else the default)."""
    c = loaded.cfg.cache
    if not c.enabled:
        return None
    from ..data.cache import default_dir

    return loaded.path(c.dir) if c.dir else default_dir()


# ------------------------------------------------------------------ step 2: resolve plugins
def open_cache(loaded: LoadedConfig, found_sweeps: dict, mode: str) -> tuple[Any, str | None]:
    """The query cache (``cache.enabled``), else for a run with sweeps or a second stage a
    run-local one so the points / stages still share queries (with a note), else none."""
    cfg = loaded.cfg
    if cfg.cache.enabled:
        return QueryCache.for_config(loaded), None
    if found_sweeps or rescore.wanted(cfg, mode):
        return sweeps.sharing_cache(cfg.run.executor.plugin, cfg.cache.max_bytes)
    return None, None


def target_context(loaded: LoadedConfig) -> dict[str, Any]:
    cfg = loaded.cfg
    return {
        "device": cfg.run.device, "config_dir": str(loaded.base_dir), "dtype": cfg.run.dtype,
        "channels_last": cfg.run.channels_last, "compile": cfg.run.compile,
    }


def build_attacks(loaded: LoadedConfig, entries: list, classes: dict, target: Any) -> tuple[list[PreparedAttack], dict[str, str]]:
    """Every attack entry built through the factory against the built target: access checked,
    then the target's defaults, the preset and the user's values, validated, created, checked."""
    cfg = loaded.cfg
    distances = plugins.registry("distances")
    out, params_where = [], {}  # entry name -> "attacks[i].params (file, line)"
    for i, acfg in entries:
        acls = classes[i]
        check_access(acls, target, acfg.key)
        seed_key = acfg.draw_key(getattr(acls, "name", None))
        ctx = AttackContext(name=acfg.key, seed_key=seed_key, run_seed=cfg.run.seed, distances=distances)
        params, attack = factory.build_with_params(
            "attacks", acls, acfg.params, target, ctx, config=loaded, at=("attacks", i), target=target, check=True
        )
        out.append(PreparedAttack(acfg, acfg.key, acls, params, attack, seed_key))
        params_where[acfg.key] = where(loaded, "attacks", i, "params")
    return out, params_where


# ------------------------------------------------------------------ step 5: plan the jobs
def run_fingerprint(loaded: LoadedConfig, target: Any, attacks: list) -> str:
    """What the scores depend on: the config (minus report/metrics/cache/batching options), the
    target's identity (its weights) and every attack's resolved params."""
    extra = {"target": target.identity(), "attacks": {pa.name: pa.params.model_dump(mode="json") for pa in attacks}}
    blob = config_fingerprint(loaded.cfg) + json.dumps(extra, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def score_settings(loaded: LoadedConfig, second: Any, attacks: list) -> dict[str, Any]:
    """The settings outside the fingerprint that the stored scores depend on: the stage-2 ``n``
    (``inference.stage2_factor``) and the calibration split that calibrated params (e.g.
    rediffuse ``n: auto``) are fitted on (``inference.calibration_fraction``)."""
    inf, out = loaded.cfg.inference, {}
    if second is not None:
        out["inference.stage2_factor"] = inf.stage2_factor
    if any(pa.attack.needs_calibration() for pa in attacks if not pa.cls.combines):
        out["inference.calibration_fraction"] = inf.calibration_fraction
    return out


def calibration_ids(loaded: LoadedConfig, records: list, attacks: list) -> tuple[str, ...]:
    """The run's seeded calibration split, in record order, that attacks calibrating their params
    on labelled images are calibrated on (empty when no attack does)."""
    import numpy as np

    from ..stats.scorer import calibration_split

    if not any(pa.attack.needs_calibration() for pa in attacks if not pa.cls.combines):
        return ()
    cfg = loaded.cfg
    mask = calibration_split(np.array([r.label for r in records]), cfg.inference.calibration_fraction, cfg.run.seed)
    return tuple(r.id for r, m in zip(records, mask) if m)


def resume_state(loaded: LoadedConfig, run_dir: Path, fp: str, settings: dict, resume: Any, force: bool) -> bool:
    """Whether the run directory's stored state is discarded (the resume policy; a setting the
    stored scores depend on that changed is refused unless ``force``)."""
    discard = resume_policy(run_dir, fp, resume, force).discard
    changed = None if discard else settings_changed(run_dir, settings)
    if changed is not None:
        key, old, new = changed
        if not force:
            raise ResumeError(
                f"cannot resume into {run_dir}: {key} ({loaded.where(*key.split('.'))}) is {new!r} "
                f"but the scores stored there were made with {old!r}. Set it back to {old!r} to continue, run "
                f"with --no-resume to score again (the query cache keeps the queries), or use a new --output."
            )
        discard = True
    return discard


# ------------------------------------------------------------------ the five steps
def make_plan(
    loaded: LoadedConfig,
    output: Any = None,
    resume: Any = False,
    force: bool = False,
    console: Any = None,
    load_data: Callable[[], LoadedData] | None = None,
    fingerprint: Callable[[Any, list], str] | None = None,
) -> RunPlan:
    """The run plan, in the module's five steps. ``load_data`` gives the records (default: the
    config's data; ``audit reference check`` splits the reference), ``fingerprint(target,
    attacks)`` what the scores depend on (default :func:`run_fingerprint`)."""
    cfg = loaded.cfg
    console = console or term.err
    load_data = load_data or (lambda: factory.load_data(cfg.data, loaded.base_dir))
    # 1. check inputs
    inputs = check_inputs(loaded, output, load_data, console)
    data = inputs.data
    # 2. resolve plugins (the target loads its model here)
    cache, sweep_note = open_cache(loaded, inputs.sweeps, data.mode)  # the one cache handle, given to the target
    tctx = target_context(loaded)
    target = factory.build("targets", inputs.target_cls, inputs.target_params, TargetContext(cache=cache, **tctx))
    batch_size, batch_why = resolve_batch_size(cfg.run.batch_size, target)
    term.target_ready(console, target, batch_size, batch_why if cfg.run.batch_size == "auto" else None)
    conditions = {r.id: target.condition(r) for r in data.records}  # checked before any query
    images = ImageLoader(target.preprocess)
    attacks, params_where = build_attacks(loaded, inputs.entries, inputs.attack_classes, target)
    # 3. validate what needs the entries together
    combine.check_components(attacks, lambda pa: params_where[pa.name])
    # 4. estimate cost and memory (what each attack states it costs)
    second = rescore.plan_second_stage(  # None unless inference.max_queries; before any query
        inference=cfg.inference, mode=data.mode, records=data.records, attacks=attacks, target=target,
        run_seed=cfg.run.seed, where=where(loaded, "inference", "max_queries"),
    )
    preflight.check(loaded, data, attacks, target, console, batch_size=batch_size)  # sizes, memory, identical sets
    # 5. plan the jobs
    ecls, eparams = inputs.executor
    executor = factory.build("executors", ecls, eparams)
    reporters = [factory.build("reporters", c, p) for c, p in inputs.reporters]
    fp = (fingerprint or (lambda t, a: run_fingerprint(loaded, t, a)))(target, attacks)
    settings = score_settings(loaded, second, attacks)
    discard = resume_state(loaded, inputs.run_dir, fp, settings, resume, force)
    return RunPlan(
        loaded=loaded, run_dir=inputs.run_dir, data=data, sweeps=inputs.sweeps, sweep_note=sweep_note, cache=cache,
        target=target, target_cls=inputs.target_cls, target_params=inputs.target_params, target_context=tctx,
        batch_size=batch_size, conditions=conditions, images=images, attacks=attacks,
        order=tuple(sweeps.execution_order(attacks, inputs.sweeps)), second=second, executor=executor,
        reporters=reporters, fingerprint=fp, discard_state=discard, score_settings=settings,
        calibration_ids=calibration_ids(loaded, data.records, attacks), data_preflight=inputs.data_preflight,
        power_calibration=inputs.power_calibration,
    )
