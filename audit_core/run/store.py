"""The run store: SQLite in WAL mode inside the run directory, its lock and its writers.

Per-image results are committed batch by batch as they are produced, so a run killed at any
moment (even SIGKILL) resumes where it stopped with ``audit run CONFIG --resume``. Also here: the
lock (one writer per run directory), the atomic text writer every run file goes through and the
errors of a full disk. The run directory's lifecycle (manifest, resume policy, clearing,
scrubbing) is :mod:`audit_core.rundir`'s.
"""

from __future__ import annotations

import errno
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from ..base import secrets
from ..base.atomic import atomic_write
from ..base.errors import AuditError, ResumeError

STATE_FILE = "state.sqlite"
#: per-image calibration features (AttackOutput.features), created by the first batch that has any,
#: so runs without them keep the base schema
FEATURES_TABLE = """
CREATE TABLE IF NOT EXISTS features (
    attack TEXT NOT NULL, image_id TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (attack, image_id)
)
"""
LOCK_FILE = ".lock"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores (
    attack TEXT NOT NULL, image_id TEXT NOT NULL, score REAL NOT NULL,
    nfe REAL NOT NULL, queries REAL NOT NULL, residual BLOB, recon BLOB,
    PRIMARY KEY (attack, image_id)
);
CREATE TABLE IF NOT EXISTS image_hashes (image_id TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attack_stats (
    attack TEXT PRIMARY KEY, seconds REAL NOT NULL DEFAULT 0, cache_hits INTEGER NOT NULL DEFAULT 0,
    nfe_saved INTEGER NOT NULL DEFAULT 0,
    extras TEXT NOT NULL DEFAULT '{}'
);
"""


def array_to_blob(a: np.ndarray | None) -> bytes | None:
    if a is None:
        return None
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.float16), allow_pickle=False)
    return buf.getvalue()


def blob_to_array(b: bytes | None) -> np.ndarray | None:
    if b is None:
        return None
    return np.load(io.BytesIO(b), allow_pickle=False).astype(np.float32)


DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
SQLITE_DISK_HINTS = ("full", "disk i/o error", "unable to open database", "readonly database")


def disk_error(exc: OSError, what: str, resumable: bool = True) -> AuditError:
    """A clear error for a failed write (full disk, quota, file size limit, I/O): resumable
    (``--resume`` keeps what was committed), or, before anything was committed, a plain rerun."""
    text = str(exc).lower()
    if not resumable:
        return AuditError(f"cannot write {what}: {exc.strerror or exc}. Nothing was scored yet: fix the problem and run again.")
    if exc.errno in DISK_ERRNOS or "full" in text or "too large" in text:
        why = "the disk is full (or a quota/file-size limit was reached)"
    elif exc.errno == errno.EIO or "i/o error" in text:
        why = "a disk I/O error happened (is the disk full or failing?)"
    else:
        return AuditError(
            f"cannot write {what}: {exc.strerror or exc}. Everything committed so far is kept: fix the "
            f"problem and run again with --resume."
        )
    return AuditError(
        f"{why} while writing {what}. Everything committed so far is kept: free some space and run "
        f"again with --resume."
    )


def _sqlite_disk_error(exc: sqlite3.Error, what: str) -> AuditError | None:
    text = str(exc).lower()
    if "full" in text:
        return disk_error(OSError(errno.ENOSPC, str(exc)), what)
    if "disk i/o error" in text:
        return disk_error(OSError(errno.EIO, str(exc)), what)
    if any(h in text for h in SQLITE_DISK_HINTS):  # permissions, a read-only mount...
        return disk_error(OSError(errno.EACCES, str(exc)), what)
    return None


class RunLock:
    """An exclusive advisory lock on ``<run_dir>/.lock``, held while a process writes into a run
    directory, so two audits cannot write into one run directory at once. The OS releases it
    when the process dies, even by SIGKILL, so a killed run never leaves a stale lock."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fh = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            return self
        try:
            fh = open(self.path, "a+")
        except OSError as exc:
            raise disk_error(exc, str(self.path)) from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ResumeError(
                f"another audit process is writing into {self.path.parent} right now. Wait for it to "
                f"finish (or stop it), or use another --output."
            ) from None
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the flock
            self._fh = None

    @staticmethod
    def check(run_dir: Path) -> None:
        """Raise ResumeError when another process holds the lock (creates nothing)."""
        if (Path(run_dir) / LOCK_FILE).exists():
            RunLock(run_dir).acquire().release()


class RunStore:
    """The per-image results of one run directory (the writer should hold a :class:`RunLock`)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STATE_FILE
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            err = _sqlite_disk_error(exc, str(self.path))
            if err is not None:
                raise err from None
            raise ResumeError(
                f"the run state {self.path} is damaged ({exc}). Start that run over with --no-resume, or "
                f"use another --output."
            ) from None

    # meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self._write(lambda: self.db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        ))

    # scores -------------------------------------------------------------------------------
    def count(self) -> int:
        """Scored (attack, image) rows, all attacks together."""
        return int(self.db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def done_ids(self, attack: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT image_id FROM scores WHERE attack=?", (attack,))}

    def add_batch(
        self, attack: str, rows: list[tuple], seconds: float, cache_hits: int = 0, nfe_saved: int = 0,
        features: np.ndarray | None = None,
    ) -> None:
        """rows: (image_id, score, nfe, queries, residual ndarray|None, recon ndarray|None);
        ``features``: ``[len(rows), F]`` the attack's calibration features of those images, or None.
        One transaction per batch: all of it lands or none of it."""

        def tx() -> None:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(attack, i, float(s), float(n), float(q), array_to_blob(r), array_to_blob(c)) for i, s, n, q, r, c in rows],
                )
                if features is not None:  # JSON floats: exact, unlike the float16 map blobs
                    self.db.execute(FEATURES_TABLE)
                    self.db.executemany(
                        "INSERT OR REPLACE INTO features VALUES (?, ?, ?)",
                        [(attack, row[0], json.dumps([float(v) for v in f])) for row, f in zip(rows, features)],
                    )
                self.db.execute(
                    "INSERT INTO attack_stats(attack, seconds, cache_hits, nfe_saved) VALUES(?, ?, ?, ?) "
                    "ON CONFLICT(attack) DO UPDATE SET seconds = seconds + excluded.seconds, "
                    "cache_hits = cache_hits + excluded.cache_hits, nfe_saved = nfe_saved + excluded.nfe_saved",
                    (attack, float(seconds), int(cache_hits), int(nfe_saved)),
                )
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # a failed COMMIT may already have rolled back
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

        self._write(tx)

    def scores(self, attack: str) -> dict[str, tuple[float, float, float]]:
        return {
            r[0]: (r[1], r[2], r[3])
            for r in self.db.execute("SELECT image_id, score, nfe, queries FROM scores WHERE attack=?", (attack,))
        }

    def features(self, attack: str) -> dict[str, list[float]]:
        """image id -> the calibration features the attack returned for it (images without: absent)."""
        if not self._has_features():
            return {}
        return {i: json.loads(d) for i, d in self.db.execute("SELECT image_id, data FROM features WHERE attack=?", (attack,))}

    def _has_features(self) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='features'").fetchone() is not None

    def maps(self, attack: str, ids: list[str] | None = None) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
        """image id -> (residual, reconstruction)."""
        rows = self.db.execute("SELECT image_id, residual, recon FROM scores WHERE attack=?", (attack,))
        want = set(ids) if ids is not None else None
        return {
            i: (blob_to_array(r), blob_to_array(c)) for i, r, c in rows if want is None or i in want
        }

    def attack_stats(self, attack: str) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT seconds, cache_hits, nfe_saved, extras FROM attack_stats WHERE attack=?", (attack,)
        ).fetchone()
        if not row:
            return {"seconds": 0.0, "cache_hits": 0, "nfe_saved": 0, "extras": {}}
        return {"seconds": row[0], "cache_hits": row[1], "nfe_saved": row[2], "extras": json.loads(row[3])}

    def set_extras(self, attack: str, extras: dict) -> None:
        self._write(lambda: self.db.execute(
            "INSERT INTO attack_stats(attack, extras) VALUES(?, ?) ON CONFLICT(attack) DO UPDATE SET extras=excluded.extras",
            (attack, json.dumps(extras)),
        ))

    # image contents ---------------------------------------------------------------------------
    def image_hashes(self) -> dict[str, str]:
        """image id -> sha256 of the content it was scored with."""
        return dict(self.db.execute("SELECT image_id, sha256 FROM image_hashes").fetchall())

    def set_image_hashes(self, hashes: dict[str, str]) -> None:
        self._transaction(lambda: self.db.executemany(
            "INSERT INTO image_hashes(image_id, sha256) VALUES(?, ?) "
            "ON CONFLICT(image_id) DO UPDATE SET sha256=excluded.sha256",
            [(i, h) for i, h in hashes.items() if h is not None],
        ))

    def forget_images(self, ids: list[str]) -> None:
        """Drop every attack's score of these images (they are scored again)."""
        def drop() -> None:
            self.db.executemany("DELETE FROM scores WHERE image_id=?", [(i,) for i in ids])
            if self._has_features():
                self.db.executemany("DELETE FROM features WHERE image_id=?", [(i,) for i in ids])

        self._transaction(drop)

    def _transaction(self, fn) -> None:
        """``fn`` in one transaction (in autocommit mode every statement would be its own,
        each appending pages to the write-ahead log)."""

        def tx() -> None:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                fn()
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

        self._write(tx)

    def rescore_changed(self, hashes: dict[str, str]) -> list[str]:
        """Record every image's content hash; forget the scores of (and return) the images whose
        content changed since they were scored, so that a resumed run scores them again."""
        old = self.image_hashes()
        changed = sorted(i for i, h in hashes.items() if i in old and old[i] != h)
        if changed:
            self.forget_images(changed)
        new = {i: h for i, h in hashes.items() if old.get(i) != h}
        if new:
            self.set_image_hashes(new)
        return changed

    def _write(self, fn) -> None:
        try:
            fn()
        except sqlite3.DatabaseError as exc:
            err = _sqlite_disk_error(exc, str(self.path))
            if err is not None:
                raise err from None
            raise
        except OSError as exc:
            raise disk_error(exc, str(self.path)) from None

    def close(self) -> None:
        self.db.close()


def write_text(path: Path, text: str) -> None:
    """Atomic write (a temporary file in the same folder, flushed to disk, then renamed), with
    registered secrets scrubbed: a full disk leaves the old file intact, never half of a new one."""
    # backslashreplace: a non-UTF-8 file name (lone surrogates) is escaped, never a crash at the end of a run
    atomic_write(path, secrets.scrub(text), errors="backslashreplace")
