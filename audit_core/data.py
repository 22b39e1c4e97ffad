"""Data sources and image loading.

A source in ``data:`` is one of
- ``builtin:NAME/SUBSET``: a dataset registered through the ``register_datasets`` hook;
- a folder of images (searched recursively, sorted, ids = relative paths);
- a CSV or JSONL manifest with a ``path`` column (relative to the manifest) and optional
  ``caption`` and ``id`` columns; other columns (e.g. ``class``) are kept in ``ImageRecord.extra``.

Every file is checked before anything is written (readable, non-empty, a decodable image, within
the pixel limit, no symlink loop). Bad files are all listed in one error, or skipped and recorded
with ``data.on_error: skip``.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import io
import json
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .records import ImageRecord

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MANIFEST_EXTS = {".csv", ".jsonl", ".ndjson"}


@dataclass
class LoadedData:
    mode: str  # evaluation | copyright
    records: list[ImageRecord]
    skipped: list[dict] = field(default_factory=list)  # [{"path", "reason"}]
    notes: list[str] = field(default_factory=list)


def _walk_images(folder: Path, follow_symlinks: bool) -> list[Path]:
    seen_dirs: set[str] = set()
    out: list[Path] = []

    def visit(d: Path, chain: tuple[str, ...]) -> None:
        real = os.path.realpath(d)
        if real in chain:
            raise DataError(
                f"symlink loop under {folder}: {d} points back to its own parent folder {real}. Remove the "
                f"link, or set data.follow_symlinks: false."
            )
        if real in seen_dirs:
            return
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot list folder {d}: {exc.strerror or exc}") from None
        for e in entries:
            p = Path(e.path)
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir(follow_symlinks=follow_symlinks)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise DataError(f"unreadable entry in {folder}: {p} ({exc.strerror or exc})") from None
                is_dir = False  # a link loop (a.png -> b.png -> a.png): listed as a bad file
            if is_dir:
                visit(p, (*chain, real))
            elif not follow_symlinks and e.is_symlink() and os.path.isdir(p):
                continue  # data.follow_symlinks: false -> linked folders are not searched
            else:
                out.append(p)  # links that dangle or loop are reported by check_file

    visit(folder, ())
    return out


def _read_manifest(path: Path) -> list[dict]:
    rows: list[dict] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or "path" not in reader.fieldnames:
                    raise DataError(f"manifest {path}: needs a header with a `path` column (and optional `caption`)")
                rows = [dict(r) for r in reader]
        else:
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"manifest {path}, line {n}: not valid JSON ({exc.msg})") from None
                    if not isinstance(row, dict) or "path" not in row:
                        raise DataError(f"manifest {path}, line {n}: each line needs an object with a `path`")
                    rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {path} cannot be read: {exc}") from None
    return rows


def resolve_source(spec: str, group: str, base_dir: Path, datasets: dict, follow_symlinks: bool = True) -> list[ImageRecord]:
    """Records of one ``data:`` entry (without label)."""
    if spec.startswith("builtin:"):
        name, _, subset = spec[len("builtin:"):].partition("/")
        if name not in datasets:
            avail = ", ".join(sorted(datasets)) or "none"
            raise DataError(f"data.{group}: unknown built-in dataset {name!r} (available: {avail})")
        records = list(datasets[name](subset, {}))
        for r in records:
            r.group = group
        return records
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise DataError(f"data.{group}: {path} does not exist")
    if path.is_dir():
        files = _walk_images(path, follow_symlinks)
        return [
            ImageRecord(id=f"{group}/{p.relative_to(path).as_posix()}", path=str(p), group=group)
            for p in files
        ]
    if path.suffix.lower() in MANIFEST_EXTS:
        records = []
        ids: set[str] = set()
        for i, row in enumerate(_read_manifest(path)):
            img = Path(str(row["path"])).expanduser()
            if not img.is_absolute():
                img = path.parent / img
            rid = f"{group}/{row.get('id') or row['path']}"
            if rid in ids:
                raise DataError(f"manifest {path}: row {i + 1} repeats the image id {rid!r}")
            ids.add(rid)
            caption = row.get("caption")
            extra = {str(k): str(v) for k, v in row.items() if k not in ("path", "id", "caption") and v not in (None, "")}
            records.append(ImageRecord(id=rid, path=str(img), caption=None if caption in (None, "") else str(caption), group=group, extra=extra))
        return records
    raise DataError(f"data.{group}: {path} is neither a folder nor a .csv/.jsonl manifest")


def check_file(path: str, max_pixels: int) -> str | None:
    """Why the file cannot be used, or None.

    Checks, in order: it exists and is a regular file (never opens a FIFO or a device), it is not
    empty, its header is an image format Pillow knows, its size is within ``max_pixels`` (read
    from the header, before any pixel is decoded: decompression bombs are refused cheaply), and it
    decodes completely (truncated or corrupt files are caught here, not in the middle of a run)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"dangling symlink (its target {os.readlink(path)} does not exist)"
        return f"unreadable ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "zero-byte file"
    try:
        with warnings.catch_warnings(), _pil_pixel_limit(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    return f"{w}x{h} = {w * h} pixels exceeds data.max_pixels={max_pixels}"
                im.verify()  # checksums and structure, without decoding
            with Image.open(path) as im:
                im.load()  # a full decode: truncated data fails here
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError:
        return f"exceeds the pixel limit data.max_pixels={max_pixels} (a possible decompression bomb)"
    except PermissionError as exc:
        return f"unreadable ({exc.strerror or exc})"
    except OSError as exc:
        return f"unreadable or corrupt image ({exc})"
    except Exception as exc:  # truncated or corrupt files raise many types
        return f"corrupt image ({type(exc).__name__}: {exc})"
    return None


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int):
    """Make ``data.max_pixels`` Pillow's decompression-bomb limit while checking a file (Pillow
    refuses above twice its limit before our own check could run, and warns above it)."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_records(cfg_data, base_dir: Path, datasets: dict) -> LoadedData:
    """All records of the config's data section, labelled and checked."""
    mode = cfg_data.mode
    groups = ("members", "nonmembers") if mode == "evaluation" else ("suspects", "reference")
    records: list[ImageRecord] = []
    notes: list[str] = []
    if cfg_data.dataset is not None and all(getattr(cfg_data, g) is None for g in groups):
        if cfg_data.dataset not in datasets:
            avail = ", ".join(sorted(datasets)) or "none"
            raise DataError(f"data.dataset: unknown dataset {cfg_data.dataset!r} (available: {avail})")
        opts = {"root": cfg_data.root, "split": cfg_data.split, "base_dir": str(base_dir)}
        by_group = {g: list(datasets[cfg_data.dataset](g, opts)) for g in groups}
    else:
        by_group = {
            g: resolve_source(getattr(cfg_data, g), g, base_dir, datasets, cfg_data.follow_symlinks) for g in groups
        }
    for label, g in zip((1, 0), groups):
        recs = by_group[g]
        if cfg_data.limit is not None and len(recs) > cfg_data.limit:
            notes.append(f"data.limit: kept the first {cfg_data.limit} of {len(recs)} {g}")
            recs = recs[: cfg_data.limit]
        for r in recs:
            r.label = label
            r.group = g
        records.extend(recs)
    ids = set()
    for r in records:
        if r.id in ids:
            raise DataError(f"image id {r.id!r} appears twice in the data")
        ids.add(r.id)
    bad = []
    for r in records:
        if r.path is not None:
            why = check_file(r.path, cfg_data.max_pixels)
            if why:
                bad.append({"id": r.id, "path": r.path, "group": r.group, "reason": why})
    skipped: list[dict] = []
    if bad:
        if cfg_data.on_error == "fail":
            listing = "; ".join(f"{b['path']} ({b['reason']})" for b in bad[:50])
            more = f" and {len(bad) - 50} more" if len(bad) > 50 else ""
            raise DataError(
                f"{len(bad)} bad image file(s): {listing}{more}. Fix or remove them, or set "
                f"data.on_error: skip to skip them (they are then listed in results.json)."
            )
        bad_ids = {b["id"] for b in bad}
        records = [r for r in records if r.id not in bad_ids]
        skipped = [{"path": b["path"], "group": b["group"], "reason": b["reason"]} for b in bad]
    for label, g in zip((1, 0), groups):
        if not any(r.label == label for r in records):
            spec = getattr(cfg_data, g, None) or cfg_data.dataset
            n_bad = sum(1 for b in bad if b["group"] == g)
            raise DataError(
                f"data.{g} ({spec}) is empty: no usable images"
                + (f" after skipping {n_bad} bad file(s)" if n_bad else "")
                + f". The audit needs at least one image in each of {' and '.join(groups)}."
            )
    return LoadedData(mode=mode, records=records, skipped=skipped, notes=notes)


# --- pixels --------------------------------------------------------------------------------------


def open_image(record: ImageRecord) -> Image.Image:
    if record.array is not None:
        arr = np.asarray(record.array)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(arr)
    try:
        with Image.open(record.path) as im:
            im.load()
            return im.copy()
    except Exception as exc:
        raise DataError(f"image {record.path} cannot be decoded: {exc}") from None


def to_tensor(img: Image.Image, channels: int, size: int, center_crop: bool = True) -> tuple[torch.Tensor, bool]:
    """PIL image -> ``[C, size, size]`` float in [-1, 1]; also whether it was resized or converted.

    Channels: 1 -> grayscale ("L"), 3 -> RGB, others -> repeated/truncated grayscale.
    Size: resize the shorter side to ``size`` (bicubic) then centre crop (or a plain resize)."""
    changed = False
    want_mode = "L" if channels == 1 else "RGB"
    if img.mode != want_mode:
        changed = changed or not (img.mode in ("L", "RGB") and want_mode == img.mode)
        img = ImageOps.exif_transpose(img) if hasattr(img, "getexif") else img
        img = img.convert(want_mode)
        changed = True
    if img.size != (size, size):
        changed = True
        if center_crop:
            img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        else:
            img = img.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if channels not in (1, 3):
        arr = np.repeat(arr[:, :, :1], channels, axis=2)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), changed


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` in [-1, 1] -> ``uint8 [H, W]`` or ``[H, W, 3]``."""
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr[:, :, :3]


def png_b64(x: torch.Tensor) -> str:
    """``[C, H, W]`` in [-1, 1] -> base64 8-bit PNG (grayscale when C == 1): how images travel
    over HTTP (``audit serve`` and the ``http`` target)."""
    buf = io.BytesIO()
    Image.fromarray(tensor_to_uint8(x)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def b64_bytes(data: str) -> bytes:
    """The bytes of a base64 string (a ``data:image/png;base64,`` prefix is accepted); raises
    ``binascii.Error`` for anything that is not strict base64."""
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    return base64.b64decode(data, validate=True)


# --------------------------------------------------------------------------------- run-time image loading
#: decoded, converted images kept in memory for the attacks after the first (per run), bytes
IMAGE_CACHE_BYTES = 1 << 30


class ImageLoader:
    """Decode and convert a run's images for its target, once per run: every attack after the
    first gets them from memory (up to ``max_bytes``; beyond that they are decoded again).
    ``converted`` holds the ids the target had to convert or resize (a note in results.json)."""

    def __init__(self, preprocess, max_bytes: int = IMAGE_CACHE_BYTES):
        self.preprocess = preprocess  # PIL image -> ([C, H, W] tensor, converted?), the target's
        self.max_bytes = max_bytes
        self.converted: set[str] = set()
        self._cache: dict[str, torch.Tensor] = {}
        self._bytes = 0

    def load(self, records: list[ImageRecord]) -> torch.Tensor:
        """``[B, C, H, W]`` in [-1, 1] for these records."""
        out = []
        for r in records:
            t = self._cache.get(r.id)
            if t is None:
                t, changed = self.preprocess(open_image(r))
                if changed:
                    self.converted.add(r.id)
                if self._bytes + t.nbytes <= self.max_bytes:
                    self._cache[r.id] = t
                    self._bytes += t.nbytes
            out.append(t)
        return torch.stack(out)
