"""Readers for the usual distribution formats. Each returns ``uint8 [N, H, W, 3]`` in the order
the reference code (torchvision) uses, so published split indices select the same images.

Nothing is downloaded: a missing file is a ``DataError`` naming exactly what is expected where.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from audit_core import DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's "python version" is a pickle of dicts of numpy arrays. Only what such a file needs
    may be reconstructed, so a tampered file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


#: a CIFAR python batch is ~31 MB (10 000 or 50 000 images of 3072 bytes); larger files are refused
MAX_BATCH_BYTES = 512 << 20
CIFAR_ROW = 3 * 32 * 32


def _load_batch(path: Path) -> dict:
    """A CIFAR python batch as a dict with ``data`` ``uint8 [N, 3072]``; any malformed file (not a
    pickle, truncated, not a dict, no ``data``, wrong dtype or row length) is a DataError naming
    the file and what is wrong, never a traceback."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        size = path.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise DataError(f"{path} is {size} bytes: not a CIFAR python batch (limit {MAX_BATCH_BYTES})")
        with open(path, "rb") as fh:
            data = _ArrayUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except RecursionError:
        raise DataError(f"{path} is not a CIFAR python batch: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many types (KeyError, IndexError, struct.error...)
        raise DataError(f"{path} is not a CIFAR python batch: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a CIFAR python batch: it holds a {type(data).__name__}, not a dict")
    out = {k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v for k, v in data.items()}
    rows = out.get("data")
    if rows is None:
        raise DataError(f"{path} is not a CIFAR python batch: no `data` entry (found: {', '.join(map(str, out)) or 'none'})")
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != CIFAR_ROW:
        what = f"{rows.dtype} array of shape {rows.shape}" if isinstance(rows, np.ndarray) else type(rows).__name__
        raise DataError(f"{path}: `data` must be a uint8 array of shape [N, {CIFAR_ROW}], found a {what}")
    return out


def _chw_rows_to_hwc(rows: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.uint8).reshape(-1, 3, size, size).transpose(0, 2, 3, 1)


def _folder_for(root: Path, names: tuple[str, ...], what: str, expected: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    if root.is_dir() and any((root / e).exists() for e in expected.split(", ")):
        return root
    raise DataError(
        f"{what} not found under {root}: expected a folder {' or '.join(names)} containing {expected} "
        f"(the official python/binary distribution, extracted). Nothing is downloaded."
    )


def cifar10(root: Path, train: bool = True) -> np.ndarray:
    expected = ", ".join(f"data_batch_{i}" for i in range(1, 6)) if train else "test_batch"
    folder = _folder_for(root, ("cifar-10-batches-py",), "CIFAR-10", expected)
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] if train else [folder / "test_batch"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"CIFAR-10 in {folder} lacks {', '.join(missing)}")
    return np.concatenate([_chw_rows_to_hwc(_load_batch(f)["data"], 32) for f in files])


def cifar100(root: Path, train: bool = True) -> np.ndarray:
    name = "train" if train else "test"
    folder = _folder_for(root, ("cifar-100-python",), "CIFAR-100", name)
    return _chw_rows_to_hwc(_load_batch(folder / name)["data"], 32)


def stl10(root: Path, split: str = "unlabeled") -> np.ndarray:
    fname = {"unlabeled": "unlabeled_X.bin", "train": "train_X.bin", "test": "test_X.bin"}[split]
    folder = _folder_for(root, ("stl10_binary",), "STL10", fname)
    path = folder / fname
    if not path.is_file():
        raise DataError(f"STL10 in {folder} lacks {fname}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise DataError(f"{path} is not an STL10 binary file (size {raw.size} is not a multiple of 3*96*96)")
    # stored column-major per channel: (N, 3, 96, 96) with H and W swapped
    return raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)


def image_folder_files(folder: Path) -> list[Path]:
    """torchvision ImageFolder order: class folders sorted, then files sorted within each."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    if not classes:  # a flat folder of images
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    files: list[Path] = []
    for c in classes:
        files.extend(sorted(p for p in c.rglob("*") if p.suffix.lower() in IMAGE_EXTS))
    return files


def tiny_imagenet_files(root: Path, split: str = "train") -> list[Path]:
    folder = _folder_for(root, ("tiny-imagenet-200",), "Tiny-ImageNet", "train, val, wnids.txt")
    sub = folder / split
    if not sub.is_dir():
        raise DataError(f"Tiny-ImageNet in {folder} lacks the {split}/ folder")
    return image_folder_files(sub)


def load_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A published split file: ``mia_train_idxs`` (members) and ``mia_eval_idxs`` (non-members)."""
    if not path.is_file():
        raise DataError(f"data.split: {path} does not exist (expected e.g. CIFAR10_train_ratio0.5.npz)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if not {"mia_train_idxs", "mia_eval_idxs"} <= keys:
                raise DataError(
                    f"data.split: {path} needs arrays mia_train_idxs and mia_eval_idxs (found: {', '.join(sorted(keys)) or 'none'})"
                )
            members = np.asarray(npz["mia_train_idxs"], dtype=np.int64).reshape(-1)
            nonmembers = np.asarray(npz["mia_eval_idxs"], dtype=np.int64).reshape(-1)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged zip raises BadZipFile, EOFError, KeyError...
        raise DataError(f"data.split: {path} is not a readable .npz file: {type(exc).__name__}: {exc}") from None
    overlap = np.intersect1d(members, nonmembers)
    if overlap.size:
        raise DataError(f"data.split: {path} lists {overlap.size} indices as both member and non-member")
    return members, nonmembers
