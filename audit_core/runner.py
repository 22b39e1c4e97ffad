"""The runner: validate everything, then score every image with every attack, committing
per-image results to the run store as they come, then compute metrics and write the run
directory (config.resolved.yaml, results.json, scores.csv, artifacts/) and the reports."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import combine, environment, metrics, plugins, secrets, sweeps
from .attacks import Attack, AttackContext, check_access, resolve_params
from .cache import QueryCache
from .config import AttackCfg, LoadedConfig, fingerprint
from .data import LoadedData, load_records, open_image, tensor_to_uint8
from .errors import AuditError, ConfigError, Interrupted, ResumeError
from .executors import Executor, Job, WorkBatch
from .records import LABEL_NAMES, ImageRecord
from .reporting import Reporter, RunView
from .store import STATE_FILE, RunLock, RunStore, disk_error
from .targets import Target, TargetContext

GALLERY_SIZE = 3
#: decoded, converted images kept in memory for the attacks after the first (per run)
IMAGE_CACHE_BYTES = 1 << 30


@dataclass
class PreparedAttack:
    cfg: AttackCfg
    name: str
    cls: type[Attack]
    params: Any
    attack: Attack
    seed_key: str

    @property
    def splits(self) -> bool:
        """Whether the entry is fitted on a calibration split (learned scorer, combination), so
        only its held-out images count for metrics and tests."""
        return self.cfg.learned or self.cls.combines or self.attack.needs_calibration()


class Runner:
    def __init__(
        self,
        loaded: LoadedConfig,
        output: str | Path | None = None,
        resume: bool | None = False,  # None: not said (an unfinished run in the way is refused)
        force: bool = False,
        console: Console | None = None,
    ):
        self.loaded = loaded
        self.cfg = loaded.cfg
        self.output = output
        self.resume = resume
        self.force = force
        self.console = console or Console(stderr=True)
        self._stop = False

    # ------------------------------------------------------------------ preparation (no writes)
    def prepare(self) -> None:
        cfg, loaded = self.cfg, self.loaded
        secrets.register_config(loaded.raw)  # scrubbed from everything the run writes
        tcls = self._lookup("targets", cfg.target.plugin, ("target", "plugin"))
        tparams = loaded.validate_params(tcls.Params, cfg.target.options(), ("target",))
        self.cache = None
        if cfg.cache.enabled:
            self.cache = QueryCache.for_config(loaded)
        self.target_context = {
            "device": cfg.run.device,
            "config_dir": str(loaded.base_dir),
        }
        self.target: Target = tcls(tparams, TargetContext(cache=self.cache, **self.target_context))
        self.target_cls, self.target_params = tcls, tparams
        self.data: LoadedData = load_records(cfg.data, loaded.base_dir, plugins.registry("datasets"))
        self._image_cache: dict[str, torch.Tensor] = {}
        self._image_cache_bytes = 0
        self._converted_ids: set[str] = set()
        distances = plugins.registry("distances")
        self.attacks: list[PreparedAttack] = []
        params_where: dict[str, str] = {}  # entry name -> "attacks[i].params (file, line)"
        # list-valued params expand into one entry per grid point (i stays the config index)
        self.sweeps, entries = sweeps.expand(
            cfg.attacks, lambda i, a: self._lookup("attacks", a.plugin, ("attacks", i, "plugin")), loaded
        )
        for i, acfg in entries:
            acls = self._lookup("attacks", acfg.plugin, ("attacks", i, "plugin"))
            check_access(acls, self.target, acfg.key)
            try:
                values = resolve_params(acls, self.target, acfg.params)
            except ConfigError as exc:
                raise ConfigError(f"attacks[{i}].params.preset ({loaded.where('attacks', i, 'params', 'preset')}): {exc}") from None
            params = loaded.validate_params(acls.Params, values, ("attacks", i, "params"))
            if acfg.learned and not acls.residual_maps:
                raise ConfigError(
                    f"attacks[{i}].scorer ({loaded.where('attacks', i, 'scorer')}): attack {acfg.key!r} "
                    f"(plugin {acfg.plugin!r}) yields no residual maps, so `scorer: classifier` cannot be used"
                )
            seed_key = acfg.seed_key or acfg.key
            ctx = AttackContext(name=acfg.key, seed_key=seed_key, run_seed=cfg.run.seed, distances=distances)
            attack = acls(params, self.target, ctx)
            try:
                attack.check()
            except ConfigError as exc:  # out-of-range or inconsistent params: name the config line
                raise ConfigError(f"attacks[{i}].params ({loaded.where('attacks', i, 'params')}): {exc}") from None
            self.attacks.append(PreparedAttack(acfg, acfg.key, acls, params, attack, seed_key))
            params_where[acfg.key] = f"attacks[{i}].params ({loaded.where('attacks', i, 'params')})"
        combine.check_components(self.attacks, lambda pa: params_where[pa.name])
        self.sweep_note = sweeps.ensure_sharing(self)  # sweeps share queries even without the cache
        ecls = self._lookup("executors", cfg.run.executor.plugin, ("run", "executor", "plugin"))
        eparams = loaded.validate_params(ecls.Params, cfg.run.executor.options(), ("run", "executor"))
        self.executor: Executor = ecls(eparams)
        self.reporters: list[Reporter] = []
        for i, rcfg in enumerate(cfg.reports):
            rcls = self._lookup("reporters", rcfg.plugin, ("reports", i, "plugin"))
            self.reporters.append(rcls(loaded.validate_params(rcls.Params, rcfg.params, ("reports", i, "params"))))
        self.run_dir = self._run_dir()
        self._check_resume()

    def _lookup(self, what: str, name: str, path: tuple) -> Any:
        reg = plugins.registry(what)
        if name not in reg:
            avail = ", ".join(sorted(reg)) or "none installed"
            raise ConfigError(
                f"{'.'.join(str(p) if not isinstance(p, int) else f'[{p}]' for p in path).replace('.[', '[')} "
                f"({self.loaded.where(*path)}): unknown {what[:-1]} plugin {name!r} (installed: {avail})"
            )
        return reg[name]

    def _run_dir(self) -> Path:
        return Path(self.output) if self.output is not None else self.loaded.run_dir()

    def _check_resume(self) -> None:
        """Decide what happens to an existing run state (no writes): continue it (``--resume``
        with an unchanged config), refuse (changed config without ``--force``; an unfinished run
        when neither ``--resume`` nor ``--no-resume`` was given), or start over."""
        state = self.run_dir / STATE_FILE
        self.fingerprint = self._fingerprint()
        self._discard_state = False
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise AuditError(f"output {self.run_dir} exists and is not a folder")
        if not state.exists():
            return
        RunLock.check(self.run_dir)  # another process writing there: refuse before touching it
        store = RunStore(self.run_dir) if self.resume is not False else None
        try:
            old = store.get_meta("fingerprint") if store else None
            finished = store.get_meta("finished") if store else None
            n_saved = store.count() if store else 0
        finally:
            if store:
                store.close()
        if self.resume is None:  # neither --resume nor --no-resume
            if finished is None and n_saved:
                raise ResumeError(
                    f"{self.run_dir} holds an unfinished run ({n_saved} image score(s) saved). Continue it "
                    f"with --resume, start it over with --no-resume, or use another --output."
                )
            self._discard_state = True
            return
        if not self.resume:
            self._discard_state = True  # a fresh run replaces the old state (the query cache keeps the queries)
            return
        if old is not None and old != self.fingerprint:
            if not self.force:
                raise ResumeError(
                    f"cannot resume into {self.run_dir}: the config changed since that run started (target, "
                    f"model, data, attacks, their params or the seed differ; report, metrics and cache "
                    f"options may change freely). Use a new --output, run with --no-resume to start over, "
                    f"or add --force to discard the old results."
                )
            self._discard_state = True

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
            except OSError as exc:
                raise disk_error(exc, str(self.run_dir)) from None
            lock = RunLock(self.run_dir).acquire()
            try:
                if self._discard_state:
                    self._clear_run_dir()
                write_text(self.run_dir / "config.resolved.yaml", self.resolved_yaml())
            except OSError as exc:
                raise disk_error(exc, str(self.run_dir)) from None
            store = RunStore(self.run_dir)
            try:
                store.set_meta("fingerprint", self.fingerprint)
                if store.get_meta("started") is None:
                    store.set_meta("started", started)
                self._score_all(store)
                self.finalize(store)
                store.set_meta("finished", self.results["run"]["finished"])
            finally:
                store.close()
            try:
                self.render_reports()
            except OSError as exc:
                raise disk_error(exc, f"the reports in {self.run_dir}") from None
            self._scrub_run_dir()
        finally:
            if lock is not None:
                lock.release()
            self.target.close()
            self.executor.close()
        return self.run_dir

    def _clear_run_dir(self) -> None:
        """Start over: remove the old state and this program's outputs (nothing else)."""
        state = self.run_dir / STATE_FILE
        for suffix in ("", "-wal", "-shm"):
            Path(str(state) + suffix).unlink(missing_ok=True)
        for name in ("results.json", "scores.csv"):
            (self.run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / "artifacts", ignore_errors=True)

    def _scrub_run_dir(self) -> None:
        """Last line of defence: no registered secret stays in any file of the run directory."""
        scrubbed, binary = secrets.scrub_tree(self.run_dir)
        for p in scrubbed:
            self.console.print(f"[yellow]warning:[/] removed a secret from {escape(str(p))}", highlight=False)
        for p in binary:
            self.console.print(
                f"[bold red]warning:[/] the binary file {escape(str(p))} contains a secret value; delete it",
                highlight=False,
            )

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
            with self._progress() as progress:
                for pa in sweeps.execution_order(self.attacks, self.sweeps):  # largest n first
                    if self._stop:  # Ctrl-C during the last batch of the previous attack
                        raise Interrupted()
                    if pa.cls.combines:  # scored from the other entries' scores in finalize
                        continue
                    done = store.done_ids(pa.name)
                    todo = [r for r in records if r.id not in done]
                    task = progress.add_task(
                        escape(pa.name), total=len(records), completed=len(records) - len(todo), nfe=0.0, rate=""
                    )
                    attack, params = pa.attack, pa.params
                    if attack.needs_calibration():  # its calibration images first, then the rest
                        cal = set(self._calibration_ids())
                        self._score_records(store, progress, task, pa, attack, params, [r for r in todo if r.id in cal])
                        attack, params = self._calibrated(store, pa)
                        todo = [r for r in todo if r.id not in cal]
                    self._score_records(store, progress, task, pa, attack, params, todo)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)

    def _score_records(self, store, progress, task, pa: PreparedAttack, attack: Attack, params: Any, todo: list[ImageRecord]) -> None:
        """Score ``todo`` with one attack (built from ``params``), committing every batch."""
        if not todo:
            return
        t_start, n_done = time.perf_counter(), 0
        job = Job(
            target_plugin=self.target_cls.name,
            target_params=self.target_params.model_dump(),
            target_context={
                **self.target_context,
                "cache_dir": str(self.cache.dir) if self.cache else None,
                "cache_max_bytes": self.cache.max_bytes if self.cache else 0,
            },
            attack_plugin=pa.cls.name,
            attack_params=params.model_dump(),
            attack_context={"name": pa.name, "seed_key": pa.seed_key, "run_seed": self.cfg.run.seed},
            keep_maps=True,
            local=(self.target, attack),
        )
        for res in self.executor.run(job, self._batches(todo)):
            maps_r = res.residuals if res.residuals is not None else [None] * len(res.ids)
            maps_c = res.reconstructions if res.reconstructions is not None else [None] * len(res.ids)
            rows = list(zip(res.ids, res.scores, res.nfe, res.queries, maps_r, maps_c))
            store.add_batch(pa.name, rows, res.seconds, res.cache_hits, res.nfe_saved)
            if res.extras:
                store.set_extras(pa.name, {**store.attack_stats(pa.name)["extras"], **res.extras})
            n_done += len(res.ids)
            rate = f"{n_done / max(time.perf_counter() - t_start, 1e-9):6.1f} img/s"
            progress.update(task, advance=len(res.ids), nfe=float(np.mean(res.nfe)), rate=rate)
            if self._stop:
                raise Interrupted()

    def _calibration_ids(self) -> list[str]:
        """The run's seeded calibration split (the learned scorer's), by record order."""
        from .scorer import calibration_split

        labels = np.array([r.label for r in self.data.records])
        mask = calibration_split(labels, self.cfg.inference.calibration_fraction, self.cfg.run.seed)
        return [r.id for r, m in zip(self.data.records, mask) if m]

    def _calibrated(self, store: RunStore, pa: PreparedAttack) -> tuple[Attack, Any]:
        """The attack rebuilt with the params it derives from its calibration images' stored scores
        (deterministic, so a resumed run gets the same); the updates are kept for results.json."""
        stored = store.scores(pa.name)
        label_of = {r.id: r.label for r in self.data.records}
        ids = self._calibration_ids()
        updates = pa.attack.calibrated_params(
            np.array([stored[i][0] for i in ids]), np.array([label_of[i] for i in ids])
        )
        self._calibration_updates[pa.name] = updates
        params = pa.cls.Params.model_validate({**pa.params.model_dump(), **updates})
        attack = pa.cls(params, self.target, pa.attack.context)
        attack.check()
        return attack, params

    def _on_sigint(self, signum, frame) -> None:
        if self._stop:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop = True
        self.console.print("[yellow]Ctrl-C: stopping after the current batch (press again to abort now)…[/]")

    def _batches(self, todo: list[ImageRecord]) -> Iterator[WorkBatch]:
        bs = self.cfg.run.batch_size
        for index, start in enumerate(range(0, len(todo), bs)):
            chunk = todo[start : start + bs]
            yield WorkBatch(index=index, ids=[r.id for r in chunk], captions=[r.caption for r in chunk], images=self._images_of(chunk))

    def _images_of(self, chunk: list[ImageRecord]) -> torch.Tensor:
        """Decode and convert images for the target, once per run: every attack after the first
        gets them from memory (up to IMAGE_CACHE_BYTES; beyond that they are decoded again)."""
        out = []
        for r in chunk:
            t = self._image_cache.get(r.id)
            if t is None:
                t, changed = self.target.preprocess(open_image(r))
                if changed:
                    self._converted_ids.add(r.id)
                if self._image_cache_bytes + t.nbytes <= IMAGE_CACHE_BYTES:
                    self._image_cache[r.id] = t
                    self._image_cache_bytes += t.nbytes
            out.append(t)
        return torch.stack(out)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("NFE/img {task.fields[nfe]:.0f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal and os.environ.get("AUDIT_PROGRESS") != "1",
        )

    # ------------------------------------------------------------------ results
    def finalize(self, store: RunStore) -> dict[str, Any]:
        cfg = self.cfg
        records = self.data.records
        by_id = {r.id: r for r in records}
        results: dict[str, Any] = {
            "run": {
                "name": cfg.run.name,
                "seed": cfg.run.seed,
                "mode": self.data.mode,
                "started": store.get_meta("started"),
                "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "config_fingerprint": self.fingerprint,
                "n_members": sum(1 for r in records if r.label == 1),
                "n_nonmembers": sum(1 for r in records if r.label == 0),
                "skipped": self.data.skipped,
                "notes": list(self.data.notes),
                "executor": secrets.redact(self.executor.describe()),
            },
            "environment": environment.collect(self.target),
            "target": secrets.redact(self.target.describe()),
            "attacks": {},
        }
        if self.data.mode == "copyright":
            results["run"]["n_suspects"] = results["run"].pop("n_members")
            results["run"]["n_reference"] = results["run"].pop("n_nonmembers")
        converted = len(self._converted_ids)
        if converted:
            results["run"]["notes"].append(
                f"{converted} image(s) were converted to {self.target.channels} channel(s) and/or resized "
                f"to {self.target.image_size}x{self.target.image_size} for the target"
            )
        csv_rows: list[list[Any]] = []
        split_col = any(pa.splits for pa in self.attacks)
        for pa in self.attacks:
            combined = None
            if pa.cls.combines:
                combined = combine.combine_entry(
                    pa, store, records, cfg.inference.calibration_fraction, cfg.run.seed
                )
                stored = {i: (s, f, q) for i, s, f, q in zip(combined.ids, combined.scores, combined.nfe, combined.queries)}
            else:
                stored = store.scores(pa.name)
            ids = [r.id for r in records if r.id in stored]
            raw = np.array([stored[i][0] for i in ids])
            labels = np.array([by_id[i].label for i in ids])
            stats = store.attack_stats(pa.name)
            entry: dict[str, Any] = {
                "plugin": pa.cls.name,
                "params": secrets.redact(pa.params.model_dump(mode="json")),
                "requires": sorted(pa.cls.requires),
                **pa.attack.describe(),
            }
            splits = np.array(["all"] * len(ids), dtype=object)
            scores = raw
            eval_mask = np.ones(len(ids), dtype=bool)
            if combined is not None:
                eval_mask = ~combined.calibration
                splits = np.where(combined.calibration, "calibration", "evaluation").astype(object)
                entry["scorer"] = combined.info
                entry["components_on_evaluation"] = {  # each component on the same held-out images
                    n: metrics.compute(s[eval_mask], labels[eval_mask], cfg.metrics.bootstrap, cfg.run.seed)
                    for n, s in combined.component_scores.items()
                }
            elif pa.attack.needs_calibration():
                cal = set(self._calibration_ids())
                in_cal = np.array([i in cal for i in ids])
                eval_mask = ~in_cal
                splits = np.where(in_cal, "calibration", "evaluation").astype(object)
                entry["scorer"] = {
                    "kind": "threshold",
                    "calibrated_params": self._calibration_updates.get(pa.name, {}),
                    "note": (
                        "params calibrated on the run's calibration split (scored first, with the whole budget); "
                        "metrics are on the other images only"
                    ),
                }
                entry["queries_per_image_evaluation"] = float(np.mean([stored[i][2] for i, m in zip(ids, eval_mask) if m]))
            elif pa.cfg.learned:
                from .scorer import train_recipe

                maps = store.maps(pa.name)
                stack = np.stack([maps[i][0] for i in ids])
                sr = train_recipe(
                    stack, labels, pa.cfg.scorer.recipe, fraction=cfg.inference.calibration_fraction, seed=cfg.run.seed
                )
                scores = sr.scores
                eval_mask = ~sr.calibration
                splits = np.where(sr.calibration, "calibration", "evaluation").astype(object)
                entry["scorer"] = sr.info
                entry["threshold_scorer_metrics"] = metrics.compute(
                    raw[eval_mask], labels[eval_mask], cfg.metrics.bootstrap, cfg.run.seed
                )
            else:
                entry["scorer"] = {"kind": "threshold", "note": "the attack's score, thresholded"}
            s_eval, l_eval = scores[eval_mask], labels[eval_mask]
            entry["metrics"] = metrics.compute(s_eval, l_eval, cfg.metrics.bootstrap, cfg.run.seed)
            entry["roc"] = metrics.roc_points(s_eval, l_eval)
            if self.data.mode == "copyright":
                entry["metrics_note"] = (
                    "copyright mode: metrics and ROC compare suspects (positive class) with the reference; "
                    "they measure membership only if every suspect is a member. See set_inference."
                )
            if self.data.mode == "evaluation":
                entry["calibrated"] = metrics.calibrated_operating_point(
                    s_eval, l_eval, cfg.inference.alpha, cfg.inference.calibration_fraction, cfg.run.seed
                )
            entry.update(
                {
                    "nfe_per_image": float(np.mean([stored[i][1] for i in ids])),
                    "queries_per_image": float(np.mean([stored[i][2] for i in ids])),
                    "cache_hits": int(stats["cache_hits"]),
                    "spent": {
                        "queries": int(round(sum(stored[i][2] for i in ids))) - int(stats["cache_hits"]),
                        "nfe": int(round(sum(stored[i][1] for i in ids))) - int(stats["nfe_saved"]),
                    },
                    "seconds": round(float(stats["seconds"]), 3),
                    "seconds_per_100_images": round(100 * float(stats["seconds"]) / max(len(ids), 1), 3),
                    "n_members": int((l_eval == 1).sum()),
                    "n_nonmembers": int((l_eval == 0).sum()),
                }
            )
            if combined is not None:  # it queries nothing itself: its cost is its components'
                entry["spent"] = {"queries": 0, "nfe": 0}
                entry["cost_note"] = "nfe/queries per image are the sum of the combined entries' (already spent by them)"
            if stats["extras"]:
                entry["extras"] = stats["extras"]
            entry["gallery"] = self._gallery(store, pa.name, ids, scores, labels)
            results["attacks"][pa.name] = entry
            label_names = LABEL_NAMES[self.data.mode]
            for j, i in enumerate(ids):
                r = by_id[i]
                row = [pa.name, i, r.path or "", label_names[int(labels[j])], repr(float(scores[j]))]
                if split_col:
                    row.append(splits[j])
                csv_rows.append(row)
        sweeps.extend_results(self, results)
        self._post_results(results, csv_rows)
        header = ["attack", "image_id", "path", "label", "score"] + (["split"] if split_col else [])
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header + self._extra_columns)
        w.writerows(csv_rows)
        results = secrets.scrub_obj(results)
        try:
            write_text(self.run_dir / "scores.csv", buf.getvalue())
            write_text(self.run_dir / "results.json", json.dumps(results, indent=2, default=_json_default))
        except OSError as exc:
            raise disk_error(exc, str(self.run_dir)) from None
        self.results = results
        return results

    _extra_columns: list[str] = []

    def _post_results(self, results: dict, csv_rows: list[list[Any]]) -> None:
        """Extension point for result blocks computed from all attacks (copyright mode...)."""
        from . import inference

        self._extra_columns = inference.extend_results(self, results, csv_rows)

    def _gallery(self, store: RunStore, attack: str, ids: list[str], scores: np.ndarray, labels: np.ndarray) -> list[dict]:
        """PNG triples (original, reconstruction, residual) of the most and least member-like images."""
        order = np.argsort(-scores, kind="stable")
        picks = [("most member-like", j) for j in order[:GALLERY_SIZE]] + [
            ("least member-like", j) for j in order[::-1][:GALLERY_SIZE]
        ]
        maps = store.maps(attack, [ids[j] for _, j in picks])
        folder = self.run_dir / "artifacts" / safe_name(attack)
        by_id = {r.id: r for r in self.data.records}
        out = []
        for rank, (kind, j) in enumerate(picks):
            image_id = ids[j]
            residual, recon = maps.get(image_id, (None, None))
            item: dict[str, Any] = {
                "kind": kind,
                "image_id": image_id,
                "label": int(labels[j]),
                "score": float(scores[j]),
                "caption": by_id[image_id].caption,
            }
            try:
                folder.mkdir(parents=True, exist_ok=True)
                original = self._images_of([by_id[image_id]])[0]
                item["original"] = save_png(folder / f"{rank:02d}_original.png", original.numpy(), self.run_dir)
                if recon is not None:
                    item["reconstruction"] = save_png(folder / f"{rank:02d}_reconstruction.png", recon, self.run_dir)
                if residual is not None:
                    item["residual"] = save_png(folder / f"{rank:02d}_residual.png", residual, self.run_dir, residual=True)
            except AuditError:
                continue
            except OSError as exc:
                raise disk_error(exc, str(folder)) from None
            out.append(item)
        return out

    def render_reports(self) -> list[Path]:
        return render_reports(RunView(self.run_dir), self.reporters, self.console) if self.reporters else []


def render_reports(view: RunView, reporters: list[Reporter], console: Console | None = None) -> list[Path]:
    """Render every reporter. A reporter that crashes (a bug in a plugin) costs its own report
    only: the scores and results are already saved, so it is a warning, not a failed run."""
    run_dir = view.dir
    paths: list[Path] = []
    for rep in reporters:
        try:
            paths.extend(rep.render(view))
        except (OSError, AuditError):
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not lose a finished run
            (console or Console(stderr=True)).print(
                f"[yellow]warning:[/] reporter {escape(rep.name or type(rep).__name__)} failed "
                f"({escape(type(exc).__name__)}: {escape(str(exc))}); the results are saved in {escape(str(run_dir))}; "
                f"re-render with `audit report {escape(str(run_dir))}`",
                highlight=False,
            )
    return paths


def reporters_from_config(run_dir: Path) -> list[Reporter]:
    """Rebuild the reporters named in a run's config.resolved.yaml (for ``audit report``)."""
    from .config import ReportCfg

    p = run_dir / "config.resolved.yaml"
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    reps = []
    for item in raw.get("reports", []) or []:
        rc = ReportCfg.model_validate(item)
        reg = plugins.registry("reporters")
        if rc.plugin not in reg:
            raise ConfigError(f"{p}: unknown reporter plugin {rc.plugin!r} (installed: {', '.join(sorted(reg)) or 'none'})")
        rcls = reg[rc.plugin]
        reps.append(rcls(rcls.Params.model_validate(rc.params)))
    return reps


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)[:80] or "attack"


def save_png(path: Path, chw: np.ndarray, run_dir: Path, residual: bool = False) -> str:
    import torch
    from PIL import Image

    x = torch.as_tensor(np.asarray(chw, dtype=np.float32))
    if residual:
        x = x.abs()
        x = x / x.max().clamp_min(1e-8) * 2 - 1  # stretch to [-1, 1] for display
    arr = tensor_to_uint8(x)
    Image.fromarray(arr).save(path)
    return path.relative_to(run_dir).as_posix()


def write_text(path: Path, text: str) -> None:
    """Atomic write (a temporary file in the same folder, flushed to disk, then renamed), with
    registered secrets scrubbed: a full disk leaves the old file intact, never half of a new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(secrets.scrub(text))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_audit(loaded: LoadedConfig, **kwargs: Any) -> Path:
    return Runner(loaded, **kwargs).run()
