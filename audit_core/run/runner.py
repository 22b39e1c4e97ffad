"""The runner: validate everything, then score every image with every attack, committing
per-image results to the run store as they come, then hand the stored scores to
:mod:`audit_core.stats.results` and write the run directory (config.resolved.yaml, results.json,
scores.csv, artifacts/) and the reports.

The run directory's lifecycle (lock, resume policy, clearing, atomic writes, the secret scrub)
is :mod:`audit_core.run.store`'s; image decoding :mod:`audit_core.data`'s; terminal output
:mod:`audit_core.run.console`'s; results.json :mod:`audit_core.stats.results`'s."""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError
from rich.console import Console

from . import console as term
from ..stats import combine, metrics, results
from . import attest, data_preflight, environment, preflight, sanity, sweeps, thumbnails
from ..plugin import factory, guard, manager as plugins
from ..copyright import blind, conclusion, inference, rescore as second_stage, shift
from ..base import secrets
from ..plugin.attacks import Attack, AttackContext, check_access, check_preset, resolve_params
from .batching import resolve_batch_size
from ..data.cache import QueryCache
from ..base.config import AttackCfg, LoadedConfig, fingerprint
from .defaults import with_defaults
from ..data import ImageLoader, LoadedData, content_hash, load_records
from ..base.errors import ConfigError, DataError, Interrupted, ResumeError
from .executors import Executor, Job, WorkBatch
from .gallery import gallery_paths, save_png, safe_name, write_gallery  # noqa: F401  (save_png, safe_name: old import path)
from ..base.records import LABEL_NAMES, ImageRecord
from .reporting import Reporter, RunView, render_reports, reporters_from_config  # noqa: F401  (old import path)
from .rundir import Manifest, check_placement, check_run_dir, clear_run_dir, record_settings, resume_policy, scrub_run_dir, settings_changed
from .store import LOCK_FILE, STATE_FILE, RunLock, RunStore, disk_error, write_text
from ..plugin.targets import Target, TargetContext
from ..plugin.factory import lookup_plugin  # noqa: F401  (old import path: audit_core.run.runner.lookup_plugin)
from ..plugin.prepared import PreparedAttack
from ..plugin.names import check_named_plugins


class Runner:
    def __init__(
        self,
        loaded: LoadedConfig,
        output: str | Path | None = None,
        resume: bool | None = False,  # None: not said (an unfinished run in the way is refused)
        force: bool = False,
        console: Console | None = None,
        keep_going: bool = False,  # a crashing reporter is a warning, not a failed run (exit 1)
    ):
        self.loaded = loaded = with_defaults(loaded)
        self.keep_going = keep_going
        self.reports_failed = False
        self.cfg = loaded.cfg
        self.output = output
        self.resume = resume
        self.force = force
        self.console = console or term.err
        self._stop = False

    # ------------------------------------------------------------------ preparation (no writes)
    def _lookup(self, what: str, name: str, path: tuple) -> Any:
        return lookup_plugin(what, name, path, self.loaded.where(*path))

    def _check_names(self) -> None:
        """Every plugin the config names exists (a typo costs no model load)."""
        cfg = self.cfg
        self._lookup("targets", cfg.target.plugin, ("target", "plugin"))
        for i, a in enumerate(cfg.attacks):
            acls = self._lookup("attacks", a.plugin, ("attacks", i, "plugin"))
            check_named_plugins(acls, a.params, lambda p, i=i: f"attacks[{i}].params.{p} ({self.loaded.where('attacks', i, 'params', p)})")
        self._lookup("executors", cfg.run.executor.plugin, ("run", "executor", "plugin"))
        for i, r in enumerate(cfg.reports):
            self._lookup("reporters", r.plugin, ("reports", i, "plugin"))

    def prepare(self) -> None:
        """Validate everything, then build the run's objects. Plugin names, every param, the
        output folder and the data files are checked before the target (which loads the model)
        is built; nothing is written."""
        cfg, loaded = self.cfg, self.loaded
        secrets.register_config(loaded.raw)  # scrubbed from everything the run writes
        self._check_names()  # every plugin name first, then params, output folder and data
        tcls = self._lookup("targets", cfg.target.plugin, ("target", "plugin"))
        tparams = factory.validate(tcls, cfg.target.options(), loaded, ("target",))
        # list-valued params expand into one entry per grid point (i stays the config index)
        self.sweeps, entries = sweeps.expand(
            cfg.attacks, lambda i, a: self._lookup("attacks", a.plugin, ("attacks", i, "plugin")), loaded
        )
        for i, acfg in entries:
            self._precheck_attack(i, acfg, tcls)
        ecls = self._lookup("executors", cfg.run.executor.plugin, ("run", "executor", "plugin"))
        eparams = factory.validate(ecls, cfg.run.executor.options(), loaded, ("run", "executor"))
        reporters = []
        for i, rcfg in enumerate(cfg.reports):
            rcls = self._lookup("reporters", rcfg.plugin, ("reports", i, "plugin"))
            reporters.append((rcls, factory.validate(rcls, rcfg.params, loaded, ("reports", i, "params"))))
        self.run_dir = Path(self.output) if self.output is not None else loaded.run_dir()
        check_run_dir(self.run_dir)  # a folder of the user's files is refused before anything is loaded
        check_placement(self.run_dir, self._data_folders(), self._cache_dir())
        self.data: LoadedData = self.load_data()
        second_stage.check_config(self.loaded, self.data.mode, entries)  # before the model loads
        # copyright mode: suspects vs reference compared as files (format, size, mode, bit depth,
        # JPEG quality); warns, or with inference.strict_preflight refuses, before the model loads
        self.data_preflight = data_preflight.check(loaded, self.data, self.console)
        self.power_calibration = conclusion.check_config(self.loaded, self.data.mode)
        # ---- everything is valid: build (the target loads its model here)
        self.cache, self.sweep_note = self._open_cache()  # the one cache handle, given to the target
        self.target_context = {
            "device": cfg.run.device,
            "config_dir": str(loaded.base_dir),
            "dtype": cfg.run.dtype,
            "channels_last": cfg.run.channels_last,
            "compile": cfg.run.compile,
        }
        self.target: Target = factory.construct(tcls, tparams, TargetContext(cache=self.cache, **self.target_context))
        self.target_cls, self.target_params = tcls, tparams
        self.batch_size, batch_why = resolve_batch_size(cfg.run.batch_size, self.target)
        term.target_ready(self.console, self.target, self.batch_size, batch_why if cfg.run.batch_size == "auto" else None)
        self.conditions = {r.id: self.target.condition(r) for r in self.data.records}  # checked before any query
        self.images = ImageLoader(self.target.preprocess)
        distances = plugins.registry("distances")
        self.attacks: list[PreparedAttack] = []
        params_where: dict[str, str] = {}  # entry name -> "attacks[i].params (file, line)"
        for i, acfg in entries:
            acls = self._lookup("attacks", acfg.plugin, ("attacks", i, "plugin"))
            check_access(acls, self.target, acfg.key)
            try:
                values = resolve_params(acls, self.target, acfg.params)  # defaults, preset, yours
            except ConfigError as exc:
                raise ConfigError(f"attacks[{i}].params.preset ({loaded.where('attacks', i, 'params', 'preset')}): {exc}") from None
            params = factory.validate(acls, values, loaded, ("attacks", i, "params"))
            seed_key = acfg.seed_key or acfg.key
            ctx = AttackContext(name=acfg.key, seed_key=seed_key, run_seed=cfg.run.seed, distances=distances)
            attack = factory.construct(acls, params, self.target, ctx)
            try:
                attack.check()
            except ConfigError as exc:  # out-of-range or inconsistent params: name the config line
                raise ConfigError(f"attacks[{i}].params ({loaded.where('attacks', i, 'params')}): {exc}") from None
            self.attacks.append(PreparedAttack(acfg, acfg.key, acls, params, attack, seed_key))
            params_where[acfg.key] = f"attacks[{i}].params ({loaded.where('attacks', i, 'params')})"
        combine.check_components(self.attacks, lambda pa: params_where[pa.name])
        self.second = second_stage.SecondStage.plan(self)  # None unless inference.max_queries; before any query
        preflight.check(loaded, self.data, self.attacks, self.target, self.console, batch_size=self.batch_size)  # sizes, memory, identical sets
        self.executor: Executor = factory.construct(ecls, eparams)
        self.reporters: list[Reporter] = [factory.construct(rcls, params) for rcls, params in reporters]
        self.fingerprint = self._fingerprint()
        self._discard_state = resume_policy(self.run_dir, self.fingerprint, self.resume, self.force).discard
        self.score_settings = self._score_settings()
        changed = None if self._discard_state else settings_changed(self.run_dir, self.score_settings)
        if changed is not None:
            key, old, new = changed
            if not self.force:
                raise ResumeError(
                    f"cannot resume into {self.run_dir}: {key} ({self.loaded.where(*key.split('.'))}) is {new!r} "
                    f"but the scores stored there were made with {old!r}. Set it back to {old!r} to continue, run "
                    f"with --no-resume to score again (the query cache keeps the queries), or use a new --output."
                )
            self._discard_state = True

    def _score_settings(self) -> dict[str, Any]:
        """The settings outside the fingerprint that this run's stored scores depend on: the
        stage-2 ``n`` (``inference.stage2_factor``) and the calibration split that calibrated
        params (e.g. rediffuse ``n: auto``) are fitted on (``inference.calibration_fraction``)."""
        inf, out = self.cfg.inference, {}
        if self.second is not None:
            out["inference.stage2_factor"] = inf.stage2_factor
        if any(pa.attack.needs_calibration() for pa in self.attacks if not pa.cls.combines):
            out["inference.calibration_fraction"] = inf.calibration_fraction
        return out

    def _data_folders(self) -> dict[str, Path]:
        """The data folders the config names (``data.members``... and a dataset's ``data.root``)."""
        d = self.cfg.data
        keys = ("members", "nonmembers", "suspects", "reference", "root")
        return {f"data.{k}": self.loaded.path(getattr(d, k)) for k in keys if getattr(d, k)}

    def _cache_dir(self) -> Path | None:
        """The query cache's folder when the cache is on (``cache.dir``, else the default)."""
        c = self.cfg.cache
        if not c.enabled:
            return None
        from ..data.cache import default_dir

        return self.loaded.path(c.dir) if c.dir else default_dir()

    def load_data(self) -> LoadedData:
        """The run's records (``audit reference check`` replaces them with the reference's halves)."""
        return load_records(self.cfg.data, self.loaded.base_dir, plugins.registry("datasets"))

    def _precheck_attack(self, i: int, acfg: AttackCfg, tcls: type[Target]) -> None:
        """What can be checked of an attack entry before the target exists: its access needs
        (a target class declares its capabilities), the scorer, and its params as written
        (params the target's defaults fill in may be missing here)."""
        acls = self._lookup("attacks", acfg.plugin, ("attacks", i, "plugin"))
        check_access(acls, tcls, acfg.key)
        if acfg.learned and not acls.residual_maps:
            raise ConfigError(
                f"attacks[{i}].scorer ({self.loaded.where('attacks', i, 'scorer')}): attack {acfg.key!r} "
                f"(plugin {acfg.plugin!r}) yields no residual maps, so `scorer: classifier` cannot be used"
            )
        try:
            check_preset(acls, acfg.params)
        except ConfigError as exc:
            raise ConfigError(f"attacks[{i}].params.preset ({self.loaded.where('attacks', i, 'params', 'preset')}): {exc}") from None
        try:
            acls.Params.model_validate(acfg.params)
        except ValidationError as exc:
            if any(e["type"] != "missing" for e in exc.errors()):
                factory.validate(acls, acfg.params, self.loaded, ("attacks", i, "params"))  # raises, naming the line

    def _open_cache(self) -> tuple[Any, str | None]:
        """The query cache (``cache.enabled``), else for a run with sweeps a run-local one so the
        points still share queries (with a note for results.json), else none."""
        cfg = self.cfg
        if cfg.cache.enabled:
            return QueryCache.for_config(self.loaded), None
        if self.sweeps or second_stage.wanted(cfg, self.data.mode):  # points / stages share their draws through it
            return sweeps.sharing_cache(cfg.run.executor.plugin, cfg.cache.max_bytes)
        return None, None

    def _fingerprint(self) -> str:
        """What the scores depend on: the config (minus report/metrics/cache/batching options),
        the target's identity (its weights) and every attack's resolved params."""
        extra = {
            "target": self.target.identity(),
            "attacks": {pa.name: pa.params.model_dump(mode="json") for pa in self.attacks},
        }
        blob = fingerprint(self.cfg) + json.dumps(extra, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    # ------------------------------------------------------------------ execution
    def run(self) -> Path:
        self.prepare()
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        lock = None
        try:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.manifest = Manifest.load(self.run_dir)
                self.manifest.add(LOCK_FILE)  # listed before it is written, like every file of the run
                lock = RunLock(self.run_dir).acquire()
                if self._discard_state:
                    clear_run_dir(self.manifest)
                self.manifest.add("config.resolved.yaml", STATE_FILE, f"{STATE_FILE}-wal", f"{STATE_FILE}-shm", guard.LOG_NAME)
                guard.set_log_dir(self.run_dir)  # plugin tracebacks go to <run_dir>/audit.log
                write_text(self.run_dir / "config.resolved.yaml", self.resolved_yaml())
            except OSError as exc:  # before the store: only a run with saved state has something to resume
                resumable = (self.run_dir / STATE_FILE).exists() and not self._discard_state
                raise disk_error(exc, str(self.run_dir), resumable=resumable) from None
            store = RunStore(self.run_dir)
            try:
                store.set_meta("fingerprint", self.fingerprint)
                record_settings(store, self.score_settings)
                if store.get_meta("started") is None:
                    store.set_meta("started", started)
                self._start_hashes = {r.id: content_hash(r) for r in self.data.records}
                changed = store.rescore_changed(self._start_hashes)
                self.run_notes = [
                    f"{len(changed)} image(s) changed since they were scored and were scored again "
                    f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"
                ] if changed else []
                self._score_all(store)
                if self.second is not None:
                    self.second.run(store, term.Tracker(self.console))
                self.finalize(store)
                store.set_meta("finished", self.results["run"]["finished"])
                try:  # the inputs, outputs and conclusion, attested (before the reports, which show its digest)
                    attest.write_run_attestation(self, store.image_hashes())
                except OSError as exc:
                    raise disk_error(exc, str(self.run_dir / attest.ATTESTATION)) from None
            finally:
                store.close()
            try:
                attest.write_reports_attestation(self.run_dir, self.render_reports())
            except OSError as exc:
                raise disk_error(exc, f"the reports in {self.run_dir}") from None
            term.scrubbed(self.console, *scrub_run_dir(self.manifest))
        finally:
            if lock is not None:
                lock.release()
            self.target.close()
            self.executor.close()
        return self.run_dir

    def resolved_yaml(self) -> str:
        data = secrets.redact(self.cfg.model_dump(mode="json", exclude_none=True))
        return yaml.safe_dump(data, sort_keys=False)

    def _score_all(self, store: RunStore) -> None:
        records = self.data.records
        self._calibration_updates: dict[str, dict[str, Any]] = {}
        old_handler = None
        try:
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread
            pass
        try:
            with term.Tracker(self.console) as progress:
                for pa in sweeps.execution_order(self.attacks, self.sweeps):  # largest n first
                    if self._stop:  # Ctrl-C during the last batch of the previous attack
                        raise Interrupted()
                    if pa.cls.combines:  # scored from the other entries' scores in finalize
                        continue
                    done = store.done_ids(pa.name)
                    todo = [r for r in records if r.id not in done]
                    progress.start(pa.name, len(records), len(records) - len(todo))
                    attack, params = pa.attack, pa.params
                    if attack.needs_calibration():  # its calibration images first, then the rest
                        cal = set(self._calibration_ids())
                        self._score_records(store, progress, pa, attack, params, [r for r in todo if r.id in cal])
                        attack, params = self._calibrated(store, pa)
                        todo = [r for r in todo if r.id not in cal]
                    self._score_records(store, progress, pa, attack, params, todo)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)

    def _score_records(self, store, progress, pa: PreparedAttack, attack: Attack, params: Any, todo: list[ImageRecord]) -> None:
        """Score ``todo`` with ``attack`` (built from ``params``), committing every batch."""
        if not todo:
            return
        for res in self.executor.run(self._job(pa, attack, params), self._batches(todo)):
            maps_r = res.residuals if res.residuals is not None else [None] * len(res.ids)
            maps_c = res.reconstructions if res.reconstructions is not None else [None] * len(res.ids)
            rows = list(zip(res.ids, res.scores, res.nfe, res.queries, maps_r, maps_c))
            store.add_batch(pa.name, rows, res.seconds, res.cache_hits, res.nfe_saved, getattr(res, "features", None))
            if res.extras:
                store.set_extras(pa.name, {**store.attack_stats(pa.name)["extras"], **res.extras})
            progress.advance(len(res.ids), float(np.mean(res.nfe)))
            if self._stop:
                raise Interrupted()

    def _held_out_metrics(self, rows: list) -> dict[str, dict] | None:
        """With an adaptive budget in the run (params calibrated on the calibration split), every
        sweep point's AUC and TPR@1%FPR on the images that entry is evaluated on (the other
        images), so fixed and adaptive budgets are compared on the same images; else None."""
        if self.data.mode != "evaluation" or not any(
            pa.attack.needs_calibration() for pa in self.attacks if not pa.cls.combines
        ):
            return None
        cal = set(self._calibration_ids())
        names = set(sweeps.points_by_name(self.sweeps))
        by_attack: dict[str, list] = {}
        for row in rows:
            if row.attack in names and row.image_id not in cal:
                by_attack.setdefault(row.attack, []).append(row)
        pos = LABEL_NAMES["evaluation"][1]
        out = {}
        for name, group in by_attack.items():
            labels = np.array([1 if r.label == pos else 0 for r in group])
            if labels.min() == labels.max():
                continue
            m = metrics.compute(np.array([r.score for r in group]), labels, self.cfg.metrics.bootstrap, self.cfg.run.seed)
            out[name] = {"auc": m["auc"], "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"]}
        return out

    def _calibration_ids(self) -> list[str]:
        """The run's seeded calibration split (the learned scorer's), in record order."""
        from ..stats.scorer import calibration_split

        labels = np.array([r.label for r in self.data.records])
        mask = calibration_split(labels, self.cfg.inference.calibration_fraction, self.cfg.run.seed)
        return [r.id for r, m in zip(self.data.records, mask) if m]

    def _calibrated(self, store: RunStore, pa: PreparedAttack) -> tuple[Attack, Any]:
        """The attack rebuilt with the params it derives from its calibration images' stored scores
        (deterministic, so a resumed run derives the same); the updates go to results.json."""
        stored = store.scores(pa.name)
        label_of = {r.id: r.label for r in self.data.records}
        ids = self._calibration_ids()
        scores, labels = np.array([stored[i][0] for i in ids]), np.array([label_of[i] for i in ids])
        if "features" in inspect.signature(pa.attack.calibrated_params).parameters:
            kept = store.features(pa.name)
            features = np.array([kept[i] for i in ids], dtype=np.float64) if all(i in kept for i in ids) else None
            updates = pa.attack.calibrated_params(scores, labels, features=features)
        else:
            updates = pa.attack.calibrated_params(scores, labels)
        self._calibration_updates[pa.name] = updates
        params = pa.cls.Params.model_validate({**pa.params.model_dump(), **updates})
        attack = factory.construct(pa.cls, params, self.target, pa.attack.context)
        attack.check()
        return attack, params

    def _job(self, pa: PreparedAttack, attack: Attack | None = None, params: Any = None) -> Job:
        """What an executor needs to score ``pa`` (remote workers rebuild target and attack from
        it); ``attack``/``params``: a recalibrated instance instead of ``pa``'s own."""
        attack, params = attack or pa.attack, params or pa.params
        folder = self.cache if isinstance(self.cache, QueryCache) else None
        return Job(
            target_plugin=self.target_cls.name,
            target_params=self.target_params.model_dump(),
            target_context={
                **self.target_context,
                "cache_dir": str(folder.dir) if folder else None,
                "cache_max_bytes": folder.max_bytes if folder else 0,
            },
            attack_plugin=pa.cls.name,
            attack_params=params.model_dump(),
            attack_context={"name": pa.name, "seed_key": pa.seed_key, "run_seed": self.cfg.run.seed},
            keep_maps=True,
            local=(self.target, attack),
        )

    def _on_sigint(self, signum, frame) -> None:
        if self._stop:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop = True
        term.stopping(self.console)

    def _batches(self, todo: list[ImageRecord]) -> Iterator[WorkBatch]:
        bs = self.batch_size
        for index, start in enumerate(range(0, len(todo), bs)):
            chunk = todo[start : start + bs]
            images = self.images.load(chunk)
            self._check_unchanged(chunk)
            yield WorkBatch(index=index, ids=[r.id for r in chunk], captions=[self.conditions[r.id] for r in chunk], images=images)

    def _check_unchanged(self, chunk: list[ImageRecord]) -> None:
        """The bytes just decoded (hashed while loading) are those hashed when the run started,
        which the attestation records: an image replaced mid-run stops the run (resumable)."""
        start = getattr(self, "_start_hashes", None) or {}
        for r in chunk:
            now, then = self.images.hashes.get(r.id), start.get(r.id)
            if now is not None and then is not None and now != then:
                raise DataError(
                    f"image {r.id} ({r.path}) changed on disk during the run (sha256 {then[:12]}... when the run "
                    f"started, {now[:12]}... when it was scored). Run again with --resume: it is scored anew."
                )

    # ------------------------------------------------------------------ results
    def finalize(self, store: RunStore) -> dict[str, Any]:
        """Assemble results.json and scores.csv from the store (and write the galleries)."""
        cfg, mode = self.cfg, self.data.mode
        records = self.data.records
        by_id = {r.id: r for r in records}
        notes = list(self.data.notes) + list(getattr(self, "run_notes", []))
        # what the target noticed (a precision it could not honour, weights from a pickle, ...),
        # each once, secrets scrubbed: results.json run.notes, the terminal and the report
        notes += [secrets.scrub(f"target: {n}") for n in dict.fromkeys(getattr(self.target.stats, "notes", []))]
        if self.images.converted:  # counted before the galleries decode anything
            notes.append(
                f"{len(self.images.converted)} image(s) were converted to {self.target.channels} channel(s) and/or "
                f"resized to {self.target.image_size}x{self.target.image_size} for the target"
            )
        label_names = LABEL_NAMES[mode]
        entries: dict[str, results.AttackResult] = {}
        rows: list[results.ScoreRow] = []
        second = getattr(self, "second", None)
        stage2 = second.entries_scored() if second is not None else []
        for pa in self.attacks + stage2:
            combined = None
            if pa.cls.combines:  # fitted on the calibration split from its components' scores
                combined = combine.combine_entry(pa, store, records, cfg.inference.calibration_fraction, cfg.run.seed)
                stored = {i: v for i, v in zip(combined.ids, zip(combined.scores, combined.nfe, combined.queries))}
            else:
                stored = store.scores(pa.name)
            ids = [r.id for r in records if r.id in stored]
            labels = np.array([by_id[i].label for i in ids])
            raw = np.array([stored[i][0] for i in ids])
            if combined is not None:
                final = combine.final_scores(combined, labels, bootstrap=cfg.metrics.bootstrap, seed=cfg.run.seed)
            elif pa.attack.needs_calibration():
                cal = set(self._calibration_ids())
                final = results.calibrated_scores(
                    raw, np.array([i in cal for i in ids]), self._calibration_updates.get(pa.name, {}),
                    [stored[i][2] for i in ids],
                )
            else:
                maps = None
                if pa.cfg.learned:
                    all_maps = store.maps(pa.name)
                    maps = np.stack([all_maps[i][0] for i in ids])
                final = results.final_scores(
                    raw, labels, pa.cfg.scorer.kind, maps, recipe=pa.cfg.scorer.recipe,
                    fraction=cfg.inference.calibration_fraction, bootstrap=cfg.metrics.bootstrap, seed=cfg.run.seed,
                )
            self._own(*gallery_paths(self.run_dir, pa.name))
            gallery = write_gallery(
                self.run_dir, pa.name, ids, final.scores, labels,
                lambda want, name=pa.name: store.maps(name, want), by_id, self.images.load,
            )
            entries[pa.name] = results.attack_result(
                plugin=pa.cls.name, params=secrets.redact(pa.params.model_dump(mode="json")),
                requires=pa.cls.requires, description=pa.attack.describe(), final=final, labels=labels,
                nfe=[stored[i][1] for i in ids], queries=[stored[i][2] for i in ids],
                stats=store.attack_stats(pa.name), mode=mode, alpha=cfg.inference.alpha,
                fraction=cfg.inference.calibration_fraction, bootstrap=cfg.metrics.bootstrap, seed=cfg.run.seed,
                gallery=gallery,
            )
            rows += [
                results.ScoreRow(pa.name, i, by_id[i].path or "", label_names[int(labels[j])], float(final.scores[j]),
                                 str(final.splits[j]))
                for j, i in enumerate(ids)
            ]
        run = results.run_info(
            name=cfg.run.name, seed=cfg.run.seed, mode=mode, started=store.get_meta("started"),
            finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), fingerprint=self.fingerprint,
            labels=[r.label for r in records], skipped=self.data.skipped, notes=notes,
            executor=secrets.redact(self.executor.describe()),
        )
        res = results.assemble(run, environment.collect(self.target), secrets.redact(self.target.describe()), entries)
        if self.sweeps:
            block = sweeps.summarize(self.sweeps, results.to_dict(res)["attacks"], self._held_out_metrics(rows))
            res = results.with_sweeps(res, block, sweeps.points_by_name(self.sweeps), self.sweep_note)
        if mode == "copyright":
            inf = cfg.inference
            combining = {pa.name for pa in self.attacks if pa.cls.combines}
            exclude = combining | {pa.name for pa in stage2}
            block = inference.set_inference(rows, inf.alpha, inf.combine, cfg.run.seed, inf.permutations, exclude)
            if second is not None:
                block["combined"] = second.combined(block["combined"], rows)
            baseline, stats14 = blind.for_records(records, cfg.run.seed)  # images only: the blind baseline
            reference = shift.reference_block(self, stats14)  # provenance + shift check
            block = conclusion.apply(
                block, rows, baseline, alpha=inf.alpha, method=inf.combine, seed=cfg.run.seed, permutations=inf.permutations,
                min_overlap=inf.min_overlap, max_shift_auc=inf.max_shift_auc,
                shift_auc=reference["shift_check"].get("auc"), power_auc=inf.power_auc,
                power_calibration=getattr(self, "power_calibration", None), exclude=exclude,
                stage2=second.selection() if second is not None else None,
            )
            if getattr(self, "data_preflight", None) is not None:
                block["preflight"] = self.data_preflight
            if inf.sanity:  # the split-reference check, from the reference scores already here
                block["sanity"] = sanity.sanity_block(
                    rows, inf.alpha, inf.combine, cfg.run.seed, inf.permutations, combining, {pa.name for pa in stage2}
                )
            self._own(*thumbnails.paths(self.run_dir, [r.id for r in records if r.label == 1]))
            thumbnails.write(self.run_dir, [r for r in records if r.label == 1])  # the report's per-suspect table
            res = results.with_set_inference(res, block)
            res = results.with_reference(res, reference)
        split_col = any(pa.splits for pa in self.attacks)
        out = secrets.scrub_obj(results.to_dict(res))
        try:
            self._own("scores.csv", "results.json")
            write_text(self.run_dir / "scores.csv", results.scores_csv(rows, split_col, mode == "copyright"))
            write_text(self.run_dir / "results.json", results.to_json(out))
        except OSError as exc:
            raise disk_error(exc, str(self.run_dir)) from None
        self.results = out
        return out

    def _own(self, *paths: str | Path) -> None:
        """List files in the run's manifest before writing them (nothing to list outside run())."""
        manifest = getattr(self, "manifest", None)
        if manifest is not None:
            manifest.add(*paths)

    def render_reports(self) -> list[Path]:
        if not self.reporters:
            return []
        try:
            return render_reports(RunView(self.run_dir), self.reporters, self.console, self.keep_going, own=self._own)
        except Exception:
            self.reports_failed = True  # the results are saved: the CLI still prints the summary
            raise
