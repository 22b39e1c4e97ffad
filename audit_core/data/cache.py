"""A content-addressed query cache for variation outputs, shared across runs.

Keys are sha256 digests of (target identity, image bytes, t, k, seed, caption) computed by
``Target.cache_key``. Values are entry files ``<dir>/<key[:2]>/<key>.qc``, written atomically (a
temporary file in the same folder, then a rename), so a process killed at any moment never leaves
a truncated entry.

**The cache owns only its entries.** Its folder carries a marker file (``.audit-query-cache``)
written when the cache creates or adopts the folder; a folder that already holds other files and
no marker is refused (``ConfigError``), never written into. Only strictly named files count as
entries (two hex digits of shard folder, 64 hex digits of key, ``.qc``; temporary files
``.audit-tmp-*.tmp``): ``clear`` and eviction never touch anything else, even inside the cache
folder.

**Each entry is verified on read.** An entry is ``MAGIC``, one JSON header line
(``{"key", "dtype", "shape", "sha256"}``) and the raw little-endian array bytes. A read checks the
key, the dtype, that the byte count matches the shape and that the sha256 of the bytes matches:
anything else is a miss, noted once on stderr (the entry is then recomputed and overwritten).

Values are stored **losslessly** (float32): a variation served from the cache is bit-identical to
the one first computed, so scores do not depend on whether the cache was cold, warm or disabled,
and a resumed run matches an uninterrupted one.

Caches written by the previous version (``<key>.npy`` entries, no checksum, no marker) are adopted
when the folder holds nothing else: their entries are misses (they cannot be verified), are left
in place, are not counted against the cap, and are removed only by ``audit cache clear --legacy``.

A size cap (``cache.max_bytes``; 0 = no cap) evicts the least recently used entries: every hit
refreshes the entry's modification time, and ``trim`` removes the oldest entries until the cache
is below 90% of the cap."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from pathlib import Path

import torch

from ..base.atomic import atomic_write
from ..base.errors import ConfigError
from ..base.lru import LRU
from .cache_entry import DTYPES, MAGIC, MAX_HEADER, decode_entry, encode_entry  # noqa: F401  (they lived here)

TRIM_TO = 0.9  # after trimming, the cache holds at most this fraction of max_bytes
STALE_TMP_SECONDS = 3600  # temporary files older than this were left by killed processes
MARKER = ".audit-query-cache"  # at the cache's root: this folder is a query cache
FORMAT = "audit-query-cache"
VERSION = 2
ENTRY_RE = re.compile(r"^[0-9a-f]{64}\.qc$")
LEGACY_RE = re.compile(r"^[0-9a-f]{64}\.npy$")  # entries of the previous version (no checksum)
SHARD_RE = re.compile(r"^[0-9a-f]{2}$")
TMP_PREFIX, TMP_SUFFIX = ".audit-tmp-", ".tmp"
TMP_RE = re.compile(r"^\.audit-tmp-[A-Za-z0-9_]+\.tmp$")
LEGACY_TMP_RE = re.compile(r"^\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp(prefix=".", suffix=".tmp") of the old version
MAX_NOTES = 5  # damaged entries noted one by one on stderr, then only counted

log = logging.getLogger("audit.cache")


def default_dir() -> Path:
    """``$AUDIT_CACHE_DIR`` when set, else ``<user cache dir>/audit-diffusion/queries``."""
    from platformdirs import user_cache_dir

    env = os.environ.get("AUDIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("audit-diffusion")) / "queries"


class QueryCache:
    def __init__(self, directory: str | Path | None = None, max_bytes: int = 2_000_000_000, create: bool = True):
        self.dir = Path(directory).expanduser() if directory else default_dir()
        self.max_bytes = int(max_bytes)
        self._total: int | None = None  # running estimate of the cache's size (scanned lazily)
        self.hits = 0
        self.misses = 0
        self.evicted = 0
        self.damaged = 0
        self.notes: list[str] = []
        if create:
            self._claim()
        elif self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"cache.dir: {self.dir} is not a folder")

    @classmethod
    def for_config(cls, loaded, create: bool = True) -> QueryCache:
        """The cache a loaded audit.yaml names (``cache.dir`` relative to the config's folder,
        else the default) with its ``cache.max_bytes``."""
        c = loaded.cfg.cache
        return cls(loaded.path(c.dir) if c.dir else None, c.max_bytes, create=create)

    # ------------------------------------------------------------------ ownership
    @property
    def owned(self) -> bool:
        """True when the folder carries the cache's marker."""
        return (self.dir / MARKER).is_file()

    def _claim(self) -> None:
        """Create the folder with its marker, or adopt an empty folder or a previous-version
        cache; refuse a folder of other files (nothing is written there)."""
        try:
            if self.dir.exists() and not self.dir.is_dir():
                raise ConfigError(f"cache.dir: {self.dir} is not a folder")
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.owned:
                return
            foreign = self.foreign_example()
            if foreign is not None:
                raise ConfigError(
                    f"cache.dir: {self.dir} already holds files that are not the audit query cache (e.g. "
                    f"{foreign}) and has no {MARKER} marker. The cache never writes into or deletes from a folder "
                    f"it did not create: choose an empty or new folder for cache.dir (or $AUDIT_CACHE_DIR)."
                )
            self._write_marker()
        except OSError as exc:
            raise ConfigError(f"cache.dir: cannot create {self.dir}: {exc.strerror or exc}") from None

    def _write_marker(self) -> None:
        body = json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "note": "audit's query cache: `audit cache clear` deletes only the entries <xx>/<64 hex>.qc in this folder",
            },
            indent=1,
        )
        # atomic: two processes adopting at once both succeed
        atomic_write(self.dir / MARKER, body + "\n", fsync=False, temp_prefix=TMP_PREFIX, temp_suffix=TMP_SUFFIX)

    def foreign_example(self) -> str | None:
        """A path in the folder that neither this version nor the previous one wrote (None when
        the folder holds only cache files: an empty folder or an unmarked previous-version cache)."""
        if not self.dir.is_dir():
            return None
        for top in sorted(os.scandir(self.dir), key=lambda e: e.name):
            if top.name == MARKER or (TMP_RE.match(top.name) and top.is_file(follow_symlinks=False)):
                continue
            if not (SHARD_RE.match(top.name) and top.is_dir(follow_symlinks=False)):
                return top.path
            for f in sorted(os.scandir(top.path), key=lambda e: e.name):
                ok_name = (ENTRY_RE.match(f.name) or LEGACY_RE.match(f.name)) and f.name[:2] == top.name
                if not ((ok_name or TMP_RE.match(f.name) or LEGACY_TMP_RE.match(f.name)) and f.is_file(follow_symlinks=False)):
                    return f.path
        return None

    def _require_owned(self, action: str, strict: bool = True) -> bool:
        """For clear/trim: True when the folder is ours. An unmarked folder that holds only
        cache files is adopted; one with other files is refused (``strict``: ConfigError, else
        False), and nothing is deleted."""
        if not self.dir.is_dir():
            return False
        if self.owned:
            return True
        foreign = self.foreign_example()
        if foreign is not None:
            if not strict:
                return False
            raise ConfigError(
                f"{self.dir} is not an audit query cache (no {MARKER} marker, and it holds other files such as "
                f"{foreign}); nothing was {action}."
            )
        try:
            self._write_marker()
        except OSError:
            pass
        return True

    # ------------------------------------------------------------------ entries
    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.qc"

    def _note_damaged(self, path: Path, why: str) -> None:
        self.damaged += 1
        if self.damaged <= MAX_NOTES:
            msg = f"query cache: ignored the damaged entry {path} ({why}); it is recomputed and replaced"
            self.notes.append(msg)
            log.warning("%s", msg)

    def get(self, key: str) -> torch.Tensor | None:
        p = self._path(key)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except OSError:
            self.misses += 1
            return None
        try:
            arr = decode_entry(key, data)
        except ValueError as exc:
            self.misses += 1
            self._note_damaged(p, str(exc))
            return None
        try:
            os.utime(p)  # LRU: a hit makes the entry the most recently used
        except OSError:
            pass
        self.hits += 1
        return torch.from_numpy(arr.copy())

    def reject(self, key: str, why: str) -> None:
        """A hit its caller cannot use (e.g. another shape than the query's): counted as a miss,
        noted like a damaged entry; the caller recomputes it and ``put`` replaces it."""
        self.hits -= 1
        self.misses += 1
        self._note_damaged(self._path(key), why)

    def put(self, key: str, value: torch.Tensor) -> None:
        p = self._path(key)
        arr = value.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            p.parent.mkdir(exist_ok=True)
            # a unique temporary file, removed on failure (a full disk: the run goes on uncached)
            atomic_write(p, encode_entry(key, arr), fsync=False, temp_prefix=TMP_PREFIX, temp_suffix=TMP_SUFFIX)
            size = p.stat().st_size
        except OSError:
            return
        if not self.max_bytes:
            return
        if self._total is None:
            self._total = self._scan_bytes()  # includes the entry just written
        else:
            self._total += size
        if self._total > self.max_bytes:
            self.trim()

    def _scan(self, pattern: re.Pattern) -> list[Path]:
        out: list[Path] = []
        if not self.dir.is_dir():
            return out
        for top in os.scandir(self.dir):
            if not (SHARD_RE.match(top.name) and top.is_dir(follow_symlinks=False)):
                continue
            try:
                entries = list(os.scandir(top.path))
            except OSError:
                continue
            for f in entries:
                if pattern.match(f.name) and f.name[:2] == top.name and f.is_file(follow_symlinks=False):
                    out.append(Path(f.path))
        return out

    def files(self) -> list[Path]:
        """The cache's entries (strictly named ``<xx>/<64 hex>.qc``; nothing else counts)."""
        return self._scan(ENTRY_RE)

    def legacy_files(self) -> list[Path]:
        """Entries of the previous version (``<xx>/<64 hex>.npy``): never read, never evicted."""
        return self._scan(LEGACY_RE)

    @staticmethod
    def _bytes_of(files: list[Path]) -> int:
        total = 0
        for f in files:
            try:
                total += f.stat().st_size
            except OSError:
                pass  # removed meanwhile by another process
        return total

    def _scan_bytes(self) -> int:
        return self._bytes_of(self.files())

    def info(self) -> dict:
        files = self.files()
        legacy = self.legacy_files() if self.dir.is_dir() else []
        return {
            "dir": str(self.dir),
            "entries": len(files),
            "bytes": self._bytes_of(files),
            "max_bytes": self.max_bytes,
            "marker": self.owned,
            "legacy_entries": len(legacy),
            "legacy_bytes": self._bytes_of(legacy),
        }

    def trim(self, max_bytes: int | None = None) -> int:
        """Evict least recently used entries until the cache holds at most 90% of the cap (so
        that trimming does not run on every write); return how many entries were removed."""
        cap = self.max_bytes if max_bytes is None else int(max_bytes)
        if not self._require_owned("evicted", strict=False):  # the marker vanished mid-run: evict nothing
            return 0
        self._remove_stale_tmp()
        entries = []
        for f in self.files():
            try:
                st = f.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, f))
        total = sum(s for _, s, _ in entries)
        removed = 0
        if cap and total > cap:
            goal = int(cap * TRIM_TO)
            for _, size, f in sorted(entries, key=lambda e: (e[0], e[2].name)):
                if total <= goal:
                    break
                try:
                    f.unlink()
                    total -= size
                    removed += 1
                except OSError:
                    pass
        self._total = total
        self.evicted += removed
        return removed

    def _remove_stale_tmp(self, older_than: float = STALE_TMP_SECONDS) -> int:
        n, now = 0, time.time()
        tmps = [p for p in self._scan_tmp()]
        for f in tmps:
            try:
                if now - f.stat().st_mtime > older_than:
                    f.unlink()
                    n += 1
            except OSError:
                pass
        return n

    def _scan_tmp(self) -> list[Path]:
        out = [Path(e.path) for e in os.scandir(self.dir) if TMP_RE.match(e.name) and e.is_file(follow_symlinks=False)]
        for top in os.scandir(self.dir):
            if SHARD_RE.match(top.name) and top.is_dir(follow_symlinks=False):
                out += [
                    Path(f.path)
                    for f in os.scandir(top.path)
                    if (TMP_RE.match(f.name) or LEGACY_TMP_RE.match(f.name)) and f.is_file(follow_symlinks=False)
                ]
        return out

    def clear(self, legacy: bool = False) -> int:
        """Delete every entry (and leftover temporary files; with ``legacy`` also the entries of
        the previous version); return how many entries. A folder that is not a query cache is
        refused with a ConfigError and nothing is deleted."""
        n = 0
        if not self._require_owned("deleted"):
            return 0
        for f in self.files() + (self.legacy_files() if legacy else []):
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
        self._remove_stale_tmp(older_than=-1)
        for sub in self.dir.iterdir():
            if sub.is_dir() and not sub.is_symlink() and SHARD_RE.match(sub.name):
                try:
                    sub.rmdir()  # only empty shard folders
                except OSError:
                    pass
        self._total = 0
        return n


# --------------------------------------------------------------------------------- run-local cache
class MemoryCache(LRU):
    """A run-local query cache in memory (float32, exact), least recently used evicted past
    ``max_bytes`` (the core's one LRU, :class:`audit_core.base.lru.LRU`). Same ``get``/``put`` as
    :class:`QueryCache`."""

    def __init__(self, max_bytes: int = 2_000_000_000):
        super().__init__(max_bytes)

    def put(self, key: str, value, trim: bool = True) -> None:
        super().put(key, value.detach().to("cpu").float().clone(), trim)
