"""A content-addressed query cache for variation outputs, shared across runs.

Keys are sha256 digests of (target identity, image bytes, t, k, seed, caption) computed by
``Target.cache_key``. Values are ``.npy`` files under ``<dir>/<key[:2]>/<key>.npy``, written
atomically (a temporary file in the same folder, then a rename), so a process killed at any moment
never leaves a truncated entry.

Values are stored **losslessly** (float32, or the output's own dtype when it is wider): a variation
served from the cache is bit-identical to the one first computed, so scores do not depend on
whether the cache was cold, warm or disabled, and a resumed run matches an uninterrupted one.

A size cap (``cache.max_bytes``; 0 = no cap) evicts the least recently used entries: every hit
refreshes the entry's modification time, and ``trim`` removes the oldest files until the cache is
below 90% of the cap."""

from __future__ import annotations

import os
from collections import OrderedDict
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

TRIM_TO = 0.9  # after trimming, the cache holds at most this fraction of max_bytes
STALE_TMP_SECONDS = 3600  # temporary files older than this were left by killed processes


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
        if create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cache.dir: cannot create {self.dir}: {exc.strerror or exc}") from None
        elif self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"cache.dir: {self.dir} is not a folder")
        self._total: int | None = None  # running estimate of the cache's size (scanned lazily)
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    @classmethod
    def for_config(cls, loaded, create: bool = True) -> QueryCache:
        """The cache a loaded audit.yaml names (``cache.dir`` relative to the config's folder,
        else the default) with its ``cache.max_bytes``."""
        c = loaded.cfg.cache
        return cls(loaded.path(c.dir) if c.dir else None, c.max_bytes, create=create)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> torch.Tensor | None:
        p = self._path(key)
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            self.misses += 1
            return None
        try:
            os.utime(p)  # LRU: a hit makes the entry the most recently used
        except OSError:
            pass
        self.hits += 1
        return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))

    def put(self, key: str, value: torch.Tensor) -> None:
        p = self._path(key)
        arr = value.detach().to("cpu", torch.float32).contiguous().numpy()
        tmp = None
        try:
            p.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, p)
            tmp = None
            size = p.stat().st_size
        except OSError:
            if tmp is not None:  # a full disk: drop the partial file, the run goes on uncached
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return
        if not self.max_bytes:
            return
        if self._total is None:
            self._total = self._scan_bytes()  # includes the entry just written
        else:
            self._total += size
        if self._total > self.max_bytes:
            self.trim()

    def files(self) -> list[Path]:
        return list(self.dir.glob("*/*.npy"))

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
        files = self.files() if self.dir.is_dir() else []
        return {"dir": str(self.dir), "entries": len(files), "bytes": self._bytes_of(files), "max_bytes": self.max_bytes}

    def trim(self, max_bytes: int | None = None) -> int:
        """Evict least recently used entries until the cache holds at most 90% of the cap (so
        that trimming does not run on every write); return how many entries were removed."""
        cap = self.max_bytes if max_bytes is None else int(max_bytes)
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
        for f in self.dir.glob("*/.*.tmp"):
            try:
                if now - f.stat().st_mtime > older_than:
                    f.unlink()
                    n += 1
            except OSError:
                pass
        return n

    def clear(self) -> int:
        """Delete every entry (and leftover temporary files); return how many entries."""
        n = 0
        if not self.dir.is_dir():
            return 0
        for f in self.files():
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
        self._remove_stale_tmp(older_than=-1)
        for sub in self.dir.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                try:
                    sub.rmdir()  # only empty shard folders
                except OSError:
                    pass
        self._total = 0
        return n


# --------------------------------------------------------------------------------- run-local cache
class MemoryCache:
    """A run-local query cache in memory (float32, exact), least recently used evicted past
    ``max_bytes``. Same ``get``/``put`` as :class:`audit_core.cache.QueryCache`."""

    def __init__(self, max_bytes: int = 2_000_000_000):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        self.evicted = 0

    def get(self, key: str):
        v = self._items.get(key)
        if v is not None:
            self._items.move_to_end(key)
        return v

    def put(self, key: str, value) -> None:
        v = value.detach().to("cpu").float().clone()
        size = v.numel() * v.element_size()
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.numel() * old.element_size()
        self._items[key] = v
        self._bytes += size
        while self.max_bytes and self._bytes > self.max_bytes and len(self._items) > 1:
            _, ev = self._items.popitem(last=False)
            self._bytes -= ev.numel() * ev.element_size()
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._items)
