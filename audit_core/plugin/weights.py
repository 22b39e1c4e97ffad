"""Model weights on disk, for target plugins: an identity hash over weight files
(``weights_sha256``), a diffusers pipeline folder's layout, and pickled weights refused unless
allowed (loading a pickle can run code)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from ..base.errors import ModelError

#: weight files that are pickles (loading one can run code): refused unless ``allow_pickle``
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(files: Sequence[Path]) -> str:
    """SHA-256 over weight files' names and contents (each file hashed once per process, per path,
    size and mtime): a target identity that changes whenever the weights do."""
    h = hashlib.sha256()
    for f in files:
        st = Path(f).stat()
        h.update(Path(f).name.encode())
        h.update(_file_sha256(str(f), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


def pipeline_folder(path: Path, required: Sequence[str], what: str) -> Path:
    """``path`` if it is a folder holding every entry of ``required`` (a diffusers pipeline's
    components), else a ModelError naming the missing ones; ``what`` names the layout."""
    if not path.is_dir():
        raise ModelError(f"target.model: {path} is not a folder")
    missing = [name for name in required if not (path / name).exists()]
    if missing:
        raise ModelError(
            f"target.model: {path} is not a {what} pipeline folder: missing {', '.join(missing)} "
            f"(expected {', '.join(required)})"
        )
    return path


def require_weights(folder: Path, subfolders: Sequence[str], allow_pickle: bool) -> None:
    """Check, before anything is loaded, that each component subfolder of a diffusers folder
    holds weights: safetensors, or pickles (``PICKLE_SUFFIXES``) only with ``allow_pickle``."""
    for sub in subfolders:
        files = list((folder / sub).glob("*"))
        if any(f.suffix == ".safetensors" for f in files):
            continue
        pickled = [f for f in files if f.suffix in PICKLE_SUFFIXES]
        if pickled and not allow_pickle:
            raise ModelError(
                f"target.model: {folder / sub} holds only pickled weights ({pickled[0].name}). Unpickling can "
                f"run code from the file, so it is refused by default; set `allow_pickle: true` in the target "
                f"config only for files you trust, or convert them to safetensors."
            )
        if not pickled:
            raise ModelError(f"target.model: {folder / sub} has no weights (*.safetensors)")
