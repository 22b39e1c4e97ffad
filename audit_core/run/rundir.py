"""The run directory's lifecycle: which folder a run may write into, what it wrote (its manifest,
``.audit-run.json``), whether an existing run is continued, refused or started over, clearing a
run's own outputs and the final secret scrub. The run owns only what it writes: a folder of the
user's files is refused, and clearing and scrubbing touch only the files in the manifest."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base import secrets
from ..base.errors import AuditError, ResumeError
from .store import LOCK_FILE, STATE_FILE, RunLock, RunStore, write_text

# --------------------------------------------------------------------------------- run directory
#: the run directory's marker: the files the run wrote (relative paths), so that clearing and
#: scrubbing touch nothing else and a folder of the user's own files is never taken for a run
MANIFEST = ".audit-run.json"
MANIFEST_FORMAT = "audit-run/1"
STATE_FILES = (STATE_FILE, STATE_FILE + "-wal", STATE_FILE + "-shm")
#: names a run directory written before manifests existed may hold (adopted when it has a store)
LEGACY_NAMES = {*STATE_FILES, LOCK_FILE, "config.resolved.yaml", "results.json", "scores.csv", "artifacts",
                "report.html", "summary.md", "audit.log"}


class Manifest:
    """The list of files a run directory's runs wrote, kept in ``<run_dir>/.audit-run.json``.
    A file is listed *before* it is written, so a crash never leaves an unlisted output."""

    def __init__(self, run_dir: Path, files: set[str] | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST
        self.files: set[str] = set(files or ())

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        """The manifest of an existing run directory (an empty one for a new or empty folder; the
        run-owned files of a run directory from before manifests)."""
        run_dir = Path(run_dir)
        path = run_dir / MANIFEST
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                files = data["files"] if data.get("format") == MANIFEST_FORMAT else None
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                files = None
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise AuditError(
                    f"{path} is damaged, so it is unknown which files in {run_dir} the run wrote. Use "
                    f"another --output (or delete that folder yourself)."
                )
            outside = next((f for f in files if not _inside(f)), None)
            if outside is not None:  # never written by a run: edited by hand, or received from someone
                raise AuditError(
                    f"{path} lists {outside!r}, which is not inside {run_dir}, so it is not a manifest this "
                    f"program wrote and nothing is cleared or scrubbed by it. Use another --output (or delete "
                    f"that folder yourself)."
                )
            manifest = cls(run_dir, set(files))
            manifest.refuse_links()
            return manifest
        if not run_dir.is_dir():
            return cls(run_dir)
        legacy = {p.relative_to(run_dir).as_posix() for p in run_dir.iterdir() if p.name in LEGACY_NAMES and p.name != "artifacts"}
        art = run_dir / "artifacts"
        if art.is_dir() and not art.is_symlink():
            legacy |= {p.relative_to(run_dir).as_posix() for p in art.rglob("*") if p.is_file() and not p.is_symlink()}
        manifest = cls(run_dir, legacy)
        manifest.refuse_links()
        return manifest

    def add(self, *paths: str | Path) -> None:
        """List these files (absolute or relative to the run directory) and save the manifest."""
        rel = set()
        for p in map(Path, paths):
            if p.is_absolute() or p.parts[:len(self.run_dir.parts)] == self.run_dir.parts:
                try:
                    p = p.relative_to(self.run_dir)
                except ValueError:
                    continue  # not in the run directory: not the run's to list
            if _inside(p.as_posix()):
                rel.add(p.as_posix())
        if rel <= self.files and self.path.exists():
            return
        self.files |= rel
        self.save()

    def save(self) -> None:
        write_text(self.path, json.dumps({"format": MANIFEST_FORMAT, "files": sorted(self.files)}, indent=1) + "\n")

    def paths(self) -> list[Path]:
        return [self.run_dir / f for f in sorted(self.files)]

    def refuse_links(self) -> None:
        """Refuse (``AuditError``) a run directory where a listed file, or a folder on the way to
        one, is a symbolic link: clearing, scrubbing or writing it would act on files outside the
        run directory (``artifacts/`` replaced by a link, a run directory received from someone)."""
        names = sorted(self.files | (LEGACY_NAMES & _names(self.run_dir)) | {MANIFEST})
        for rel in names:
            link = link_on_the_way(self.run_dir, rel)
            if link is not None:
                raise AuditError(
                    f"{self.run_dir} holds a symbolic link, {link}, where the run keeps its own files; a run "
                    f"never writes, clears or scrubs through a link. Remove the link, or use another --output."
                )


def _names(folder: Path) -> set[str]:
    try:
        return {e.name for e in folder.iterdir()}
    except OSError:
        return set()


def link_on_the_way(root: Path, rel: str) -> Path | None:
    """The first symbolic link among ``root/rel``'s components below ``root`` (the file itself
    included), or None."""
    p = Path(root)
    for part in Path(rel).parts:
        p = p / part
        if p.is_symlink():
            return p
    return None


def _inside(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel not in ("", ".")


def check_run_dir(run_dir: Path) -> None:
    """Refuse (no writes) an output folder that is neither new, empty, nor a run directory:
    the run owns only what it writes. A new one must be creatable (no file on the way, a
    writable folder above it), found before any model is loaded."""
    if not run_dir.exists():
        _check_creatable(run_dir)
        return
    if not run_dir.is_dir():
        raise AuditError(f"output {run_dir} exists and is not a folder")
    if (run_dir / MANIFEST).exists():
        Manifest.load(run_dir)  # a damaged manifest, one listing paths outside or links: an error
        return
    try:
        entries = sorted(p.name for p in run_dir.iterdir())
    except OSError as exc:
        raise AuditError(f"cannot list the output folder {run_dir}: {exc.strerror or exc}") from None
    if not entries or (STATE_FILE in entries and set(entries) <= LEGACY_NAMES):
        Manifest(run_dir).refuse_links()  # e.g. `artifacts` a link in a run from before manifests
        return
    foreign = [e for e in entries if e not in LEGACY_NAMES] or entries
    raise AuditError(
        f"{run_dir} is not a run directory (it holds files this program did not write, e.g. "
        f"{', '.join(foreign[:3])}), and a run writes only into a new folder, an empty one or a previous "
        f"run's. Choose another --output (e.g. {run_dir / 'audit-run'}), or run.output in the config."
    )


def _check_creatable(run_dir: Path) -> None:
    """The nearest existing folder above a new ``run_dir`` is a writable folder (not a file)."""
    above = Path(run_dir).absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise AuditError(f"output {run_dir}: {above} is a file, not a folder, so the run directory cannot be created there")
    if not os.access(above, os.W_OK | os.X_OK):
        raise AuditError(f"output {run_dir}: the folder {above} is not writable, so the run directory cannot be created there")


def check_placement(run_dir: Path, data_folders: dict[str, Path], cache_dir: Path | None) -> None:
    """Refuse (``AuditError`` naming the setting) a run directory inside a data folder (a
    second run would read the run's own files as images) or one that is, or holds, the query
    cache's folder (the run would refuse its own folder as foreign, and clearing it would
    remove cache entries)."""
    out = _resolved(run_dir)
    for key, folder in data_folders.items():
        f = _resolved(folder)
        if f.is_dir() and (out == f or f in out.parents):
            raise AuditError(
                f"output {run_dir} is inside {key} ({folder}): a later run would read the run's own files "
                f"(reports, galleries) as images. Choose an --output outside the data folders."
            )
    if cache_dir is not None:
        c = _resolved(cache_dir)
        if c == out or out in c.parents or c in out.parents:
            raise AuditError(
                f"cache.dir {cache_dir} and the output {run_dir} overlap: the query cache and the run directory "
                f"each need a folder of their own. Choose another cache.dir (or --output)."
            )


def _resolved(p: Path) -> Path:
    try:
        return Path(p).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(Path(p).expanduser()))


@dataclass
class ExistingRun:
    """What :func:`resume_policy` decided about a run directory: ``discard`` the old state
    (start over) or keep it (a fresh directory, or ``--resume`` of an unchanged config)."""

    discard: bool = False


def _saved_state(run_dir: Path, tolerate_damage: bool) -> tuple[Any, Any, int]:
    """(fingerprint, finished, scored rows) of an existing store; a damaged store reads as empty
    when ``tolerate_damage`` (``--no-resume`` replaces it anyway)."""
    try:
        store = RunStore(run_dir)
    except ResumeError:
        if tolerate_damage:
            return None, None, 0
        raise
    try:
        return store.get_meta("fingerprint"), store.get_meta("finished"), store.count()
    finally:
        store.close()


def resume_policy(run_dir: Path, fingerprint: str, resume: bool | None, force: bool) -> ExistingRun:
    """Decide what happens to an existing run state (no writes): continue it (``--resume``
    with an unchanged config), refuse (a finished or resumed run of a different config without
    ``--force``; an unfinished run when neither ``--resume`` nor ``--no-resume`` was given), or
    start over (the same config again, ``--no-resume``, ``--force``)."""
    check_run_dir(run_dir)
    if not (run_dir / STATE_FILE).exists():
        return ExistingRun()
    RunLock.check(run_dir)  # another process writing there: refuse before touching it
    old, finished, n_saved = _saved_state(run_dir, tolerate_damage=resume is False)
    changed = old is not None and old != fingerprint
    if resume is None and finished is None and n_saved:  # neither --resume nor --no-resume
        raise ResumeError(
            f"{run_dir} holds an unfinished run ({n_saved} image score(s) saved). Continue it "
            f"with --resume, start it over with --no-resume, or use another --output."
        )
    if changed and not force and resume is not True and finished is not None:
        raise ResumeError(
            f"{run_dir} holds a finished run of a different config (target, model, data, attacks, "
            f"their params or the seed differ), and it is kept. Write this run elsewhere with "
            f"--output, continue the old config with --resume, or add --force to replace that run."
        )
    if resume is not True:
        return ExistingRun(discard=True)  # a fresh run replaces the old state (the query cache keeps the queries)
    if changed:
        if not force:
            raise ResumeError(
                f"cannot resume into {run_dir}: the config changed since that run started (target, "
                f"model, data, attacks, their params or the seed differ; report, metrics and cache "
                f"options may change freely). Use a new --output, run with --no-resume to start over, "
                f"or add --force to discard the old results."
            )
        return ExistingRun(discard=True)
    return ExistingRun()


#: the store's meta key for the settings outside the fingerprint that stored scores depend on
SETTINGS_KEY = "score_settings"


def settings_changed(run_dir: Path, settings: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """``(key, stored value, new value)`` of the first setting that differs from the one the
    stored scores were made with, or None (no write). ``settings`` holds only what this run's
    scores depend on (``inference.stage2_factor`` with a second stage, ``inference.
    calibration_fraction`` with a calibrated attack): the fingerprint leaves the ``inference``
    section out, since most of it only changes what is computed from the scores."""
    if not settings or not (Path(run_dir) / STATE_FILE).exists():
        return None
    store = RunStore(run_dir)
    try:
        old = store.get_meta(SETTINGS_KEY) or {}
    finally:
        store.close()
    for key in sorted(settings):
        if key in old and old[key] != settings[key]:
            return key, old[key], settings[key]
    return None


def record_settings(store: RunStore, settings: dict[str, Any]) -> None:
    """Remember the settings the stored scores are made with (merged over the earlier ones: a
    setting a resumed run does not use is still checked by a later one that does)."""
    old = store.get_meta(SETTINGS_KEY) or {}
    merged = {**old, **settings}
    if merged != old:  # nothing to write for a run whose scores depend on none of them
        store.set_meta(SETTINGS_KEY, merged)


def clear_run_dir(manifest: Manifest) -> None:
    """Start over: remove the old state and the run's outputs listed in its manifest (nothing
    else: a file the user put into the run directory stays)."""
    keep = {MANIFEST, LOCK_FILE}
    folders = set()
    for rel in sorted(manifest.files - keep):
        p = manifest.run_dir / rel
        if link_on_the_way(manifest.run_dir, Path(rel).parent.as_posix()) is not None:
            continue  # never delete through a linked folder (a link itself is removed, not followed)
        if p.is_file() or p.is_symlink():
            p.unlink(missing_ok=True)
        manifest.files.discard(rel)
        folders.add(p.parent)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        _remove_if_empty(folder, manifest.run_dir)
    if manifest.path.exists():
        manifest.save()  # the cleared files are no longer listed


def _remove_if_empty(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def scrub_run_dir(manifest: Manifest) -> tuple[list[Path], list[Path]]:
    """Last line of defence: no registered secret stays in a file the run wrote (its manifest).
    Returns ``(files scrubbed, binary files holding a secret)`` for the console to report."""
    return secrets.scrub_files(manifest.paths())
