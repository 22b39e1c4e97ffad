"""The run store: SQLite in WAL mode inside the run directory.

Per-image results are committed batch by batch as they are produced, so a run killed at any
moment (even SIGKILL) resumes where it stopped with ``audit run CONFIG --resume``.
"""

from __future__ import annotations

import errno
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AuditError

STATE_FILE = "state.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores (
    attack TEXT NOT NULL, image_id TEXT NOT NULL, score REAL NOT NULL,
    nfe REAL NOT NULL, queries REAL NOT NULL, residual BLOB, recon BLOB,
    PRIMARY KEY (attack, image_id)
);
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


def disk_error(exc: OSError, what: str) -> AuditError:
    if exc.errno == errno.ENOSPC or "full" in str(exc).lower():
        return AuditError(
            f"the disk is full while writing {what}. Everything committed so far is kept: free some "
            f"space and run again with --resume."
        )
    return AuditError(f"cannot write {what}: {exc}")


class RunStore:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / STATE_FILE
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            raise disk_error(OSError(errno.EIO, str(exc)), str(self.path)) from None

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
    def done_ids(self, attack: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT image_id FROM scores WHERE attack=?", (attack,))}

    def add_batch(self, attack: str, rows: list[tuple], seconds: float, cache_hits: int = 0, nfe_saved: int = 0) -> None:
        """rows: (image_id, score, nfe, queries, residual ndarray|None, recon ndarray|None).
        One transaction per batch: all of it lands or none of it."""

        def tx() -> None:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(attack, i, float(s), float(n), float(q), array_to_blob(r), array_to_blob(c)) for i, s, n, q, r, c in rows],
                )
                self.db.execute(
                    "INSERT INTO attack_stats(attack, seconds, cache_hits, nfe_saved) VALUES(?, ?, ?, ?) "
                    "ON CONFLICT(attack) DO UPDATE SET seconds = seconds + excluded.seconds, "
                    "cache_hits = cache_hits + excluded.cache_hits, nfe_saved = nfe_saved + excluded.nfe_saved",
                    (attack, float(seconds), int(cache_hits), int(nfe_saved)),
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

        self._write(tx)

    def scores(self, attack: str) -> dict[str, tuple[float, float, float]]:
        return {
            r[0]: (r[1], r[2], r[3])
            for r in self.db.execute("SELECT image_id, score, nfe, queries FROM scores WHERE attack=?", (attack,))
        }

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

    def _write(self, fn) -> None:
        try:
            fn()
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                raise disk_error(OSError(errno.ENOSPC, str(exc)), str(self.path)) from None
            raise

    def close(self) -> None:
        self.db.close()
