"""The runner: build the run plan (:mod:`audit_core.run.plan`, once, before any query), score
every image with every attack, committing per-image results to the run store as they come, then
write the run directory: config.resolved.yaml, results.json and scores.csv (assembled by
:mod:`audit_core.run.assemble`), the attestation and the reports.

The run directory's lifecycle (lock, resume policy, clearing, atomic writes, the secret scrub)
is :mod:`audit_core.run.store`'s; image decoding :mod:`audit_core.data`'s; terminal output
:mod:`audit_core.run.console`'s."""

from __future__ import annotations

import datetime as dt
import inspect
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

from . import assemble, attest
from . import console as term
from ..stats import results
from ..plugin import factory, guard
from ..base import secrets
from ..plugin.attacks import Attack
from ..data.cache import QueryCache
from ..base.config import LoadedConfig
from .defaults import with_defaults
from ..data import LoadedData, content_hash
from ..base.errors import DataError, Interrupted
from .executors import Job, WorkBatch, checked_results
from .gallery import save_png, safe_name  # noqa: F401  (old import path)
from ..base.records import ImageRecord
from .plan import RunPlan, make_plan, run_fingerprint
from .reporting import Reporter, RunView, render_reports, reporters_from_config  # noqa: F401  (old import path)
from .rundir import Manifest, clear_run_dir, record_settings, scrub_run_dir
from .store import LOCK_FILE, STATE_FILE, RunLock, RunStore, disk_error, write_text
from ..plugin.factory import lookup_plugin  # noqa: F401  (old import path: audit_core.run.runner.lookup_plugin)
from ..plugin.prepared import PreparedAttack


class Runner:
    """One run: :meth:`prepare` builds the immutable :class:`RunPlan` (kept as ``self.plan``;
    its fields read as the runner's attributes: ``runner.target``, ``runner.attacks``...),
    :meth:`run` scores, stores and writes."""

    def __init__(
        self,
        loaded: LoadedConfig,
        output: str | Path | None = None,
        resume: bool | None = False,  # None: not said (an unfinished run in the way is refused)
        force: bool = False,
        console: Console | None = None,
        keep_going: bool = False,  # a crashing reporter is a warning, not a failed run (exit 1)
    ):
        self.loaded = with_defaults(loaded)
        self.keep_going = keep_going
        self.reports_failed = False
        self.cfg = self.loaded.cfg
        self.output = output
        self.resume = resume
        self.force = force
        self.console = console or term.err
        self._stop = False

    def __getattr__(self, name: str) -> Any:
        plan = self.__dict__.get("plan")
        if plan is not None and not name.startswith("__") and hasattr(plan, name):
            return getattr(plan, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ preparation (no writes)
    def prepare(self) -> RunPlan:
        """Build the run plan (:func:`audit_core.run.plan.make_plan`): plugin names, every param,
        the output folder and the data files are checked before the target (which loads the
        model) is built; nothing is written."""
        self.plan = make_plan(
            self.loaded, self.output, self.resume, self.force, self.console, load_data=self.load_data, fingerprint=self._fingerprint
        )
        return self.plan

    def load_data(self) -> LoadedData:
        """The run's records (``audit reference check`` replaces them with the reference's halves)."""
        return factory.load_data(self.cfg.data, self.loaded.base_dir)

    def _fingerprint(self, target: Any = None, attacks: list | None = None) -> str:
        """What the scores depend on (:func:`audit_core.run.plan.run_fingerprint`)."""
        return run_fingerprint(self.loaded, target if target is not None else self.target, attacks if attacks is not None else self.attacks)

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
                if self.plan.discard_state:
                    clear_run_dir(self.manifest)
                self.manifest.add("config.resolved.yaml", STATE_FILE, f"{STATE_FILE}-wal", f"{STATE_FILE}-shm", guard.LOG_NAME)
                guard.set_log_dir(self.run_dir)  # plugin tracebacks go to <run_dir>/audit.log
                write_text(self.run_dir / "config.resolved.yaml", self.resolved_yaml())
            except OSError as exc:  # before the store: only a run with saved state has something to resume
                resumable = (self.run_dir / STATE_FILE).exists() and not self.plan.discard_state
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
                    self.stage2_ran = self.second.run(store, term.Tracker(self.console), self._score_entry)
                self.finalize(store)
                store.set_meta("finished", self.results["run"]["finished"])
                try:  # the inputs, outputs and conclusion, attested (before the reports, which show its digest)
                    attest.write_run_attestation(self.plan, store.image_hashes(), self.results, self.manifest)
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
                for pa in self.plan.order:  # each sweep's largest n first
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

    def _score_entry(self, store: RunStore, progress: Any, pa: PreparedAttack, todo: list[ImageRecord]) -> None:
        """Score ``todo`` with the entry as planned (what the second stage calls)."""
        self._score_records(store, progress, pa, pa.attack, pa.params, todo)

    def _score_records(self, store, progress, pa: PreparedAttack, attack: Attack, params: Any, todo: list[ImageRecord]) -> None:
        """Score ``todo`` with ``attack`` (built from ``params``), committing every batch."""
        if not todo:
            return
        job, ids = self._job(pa, attack, params), [r.id for r in todo]
        for res in checked_results(self.executor, job, self._batches(todo), ids):  # an executor's bugs named
            maps_r = res.residuals if res.residuals is not None else [None] * len(res.ids)
            maps_c = res.reconstructions if res.reconstructions is not None else [None] * len(res.ids)
            rows = list(zip(res.ids, res.scores, res.nfe, res.queries, maps_r, maps_c))
            store.add_batch(pa.name, rows, res.seconds, res.cache_hits, res.nfe_saved, getattr(res, "features", None))
            if res.extras:
                store.set_extras(pa.name, {**store.attack_stats(pa.name)["extras"], **res.extras})
            progress.advance(len(res.ids), float(np.mean(res.nfe)))
            if self._stop:
                raise Interrupted()

    def _calibration_ids(self) -> list[str]:
        """The run's seeded calibration split, in record order (the plan's)."""
        return list(self.plan.calibration_ids)

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
        params, attack = factory.with_params(pa.cls, pa.params, updates, self.target, pa.attack.context)
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
        """Write results.json and scores.csv, assembled from the plan and the store by
        :mod:`audit_core.run.assemble` (which also writes the galleries)."""
        out, csv_text = assemble.assemble(
            self.plan, store, stage2_ran=getattr(self, "stage2_ran", False),
            calibration_updates=getattr(self, "_calibration_updates", {}), notes=getattr(self, "run_notes", []), own=self._own,
        )
        try:
            self._own("scores.csv", "results.json")
            write_text(self.run_dir / "scores.csv", csv_text)
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
