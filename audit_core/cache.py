"""A content-addressed query cache for variation outputs, shared across runs.

Keys are sha256 digests of (target identity, image bytes, t, k, seed, caption) computed by
``Target.cache_key``. Values are float16 ``.npy`` files under ``<dir>/<key[:2]>/<key>.npy``,
written atomically. A size cap evicts the least recently used files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError


def default_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("AUDIT_CACHE_DIR") or user_cache_dir("audit-diffusion")) / "queries"


class QueryCache:
    def __init__(self, directory: str | Path | None = None, max_bytes: int = 2_000_000_000):
        self.dir = Path(directory).expanduser() if directory else default_dir()
        self.max_bytes = int(max_bytes)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cache.dir: cannot create {self.dir}: {exc.strerror or exc}") from None
        self._written = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> torch.Tensor | None:
        p = self._path(key)
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        try:
            os.utime(p)  # LRU by access time
        except OSError:
            pass
        return torch.from_numpy(arr.astype(np.float32))

    def put(self, key: str, value: torch.Tensor) -> None:
        p = self._path(key)
        try:
            p.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, value.detach().cpu().numpy().astype(np.float16), allow_pickle=False)
            os.replace(tmp, p)
            self._written += p.stat().st_size
        except OSError:
            return  # a cache that cannot write is only a slower cache
        if self.max_bytes and self._written > max(self.max_bytes // 20, 1 << 20):
            self.trim()

    def files(self) -> list[Path]:
        return list(self.dir.glob("*/*.npy"))

    def info(self) -> dict:
        files = self.files()
        return {"dir": str(self.dir), "entries": len(files), "bytes": sum(f.stat().st_size for f in files), "max_bytes": self.max_bytes}

    def trim(self) -> int:
        """Evict least recently used entries until under the cap; return how many were removed."""
        self._written = 0
        files = [(f.stat().st_mtime, f.stat().st_size, f) for f in self.files()]
        total = sum(s for _, s, _ in files)
        removed = 0
        for _, size, f in sorted(files):
            if total <= self.max_bytes:
                break
            try:
                f.unlink()
                total -= size
                removed += 1
            except OSError:
                pass
        return removed

    def clear(self) -> int:
        n = 0
        for f in self.files():
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
        return n
