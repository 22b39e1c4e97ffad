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
import hashlib
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

from ..base.errors import DataError
from ..base.records import ImageRecord, content_hash  # noqa: F401  (content_hash lived here)

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


#: manifests are read whole; a bigger one is refused (a manifest of a million images is ~100 MB)
MAX_MANIFEST_BYTES = 512 << 20
#: a CSV field longer than this is refused (the csv module's own default limit)
MAX_FIELD_CHARS = 131_072
#: JSONL rows nested deeper than this are refused before parsing (a row is a flat object)
MAX_JSON_DEPTH = 32


def _json_depth_exceeds(line: str, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit`` (strings skipped): checked before
    ``json.loads`` so a row of 100 000 ``[`` is refused without recursion."""
    depth, in_str, esc = 0, False, False
    for ch in line:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _manifest_text(path: Path) -> str:
    """The manifest's text (a UTF-8 BOM is dropped); refuses NUL bytes naming the line."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise DataError(f"manifest {path} is {size} bytes; manifests over {MAX_MANIFEST_BYTES} bytes are refused")
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"manifest {path} cannot be read: {exc.strerror or exc}") from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(f"manifest {path}, line {line}: contains a NUL byte (a binary file, or a damaged one?)")
    return text


def _row_field(path: Path, n: int, row: dict, key: str, required: bool = False) -> str | None:
    """``row[key]`` as text (numbers accepted for ids and captions); DataError naming the line otherwise."""
    v = row.get(key)
    if v is None or v == "":
        if required:
            raise DataError(f"manifest {path}, line {n}: the `{key}` is empty")
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (key == "path" and not isinstance(v, str)):
        raise DataError(f"manifest {path}, line {n}: `{key}` must be text, not {type(v).__name__}")
    return str(v)


def _extra(row: dict) -> dict[str, str]:
    """The row's other columns (metadata kept on the record), as text."""
    return {str(k): str(v) for k, v in row.items() if k not in ("path", "id", "caption") and v not in (None, "")}


def _read_manifest(path: Path) -> list[dict]:
    """Rows ``{"path", "caption", "id", "line"}`` of a CSV or JSONL manifest, bounded and checked:
    a UTF-8 BOM is accepted; NUL bytes, fields over ``MAX_FIELD_CHARS`` characters, rows nested
    deeper than ``MAX_JSON_DEPTH`` and non-text values are DataErrors naming the line."""
    text = _manifest_text(path)
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = reader.fieldnames
            if header is None or "path" not in [h.strip() for h in header]:
                raise DataError(f"manifest {path}: needs a header with a `path` column (and optional `caption`)")
            reader.fieldnames = [h.strip() for h in header]
            for r in reader:
                n = reader.line_num
                if None in r:
                    raise DataError(f"manifest {path}, line {n}: more fields than the header has columns")
                for k, v in r.items():
                    if v is not None and len(v) > MAX_FIELD_CHARS:
                        raise DataError(f"manifest {path}, line {n}: field `{k}` is {len(v)} characters (limit {MAX_FIELD_CHARS})")
                rows.append({"path": _row_field(path, n, r, "path", True), "caption": _row_field(path, n, r, "caption"),
                             "id": _row_field(path, n, r, "id"), "line": n, "extra": _extra(r)})
        except csv.Error as exc:
            # line_num counts the lines read before the one that failed
            raise DataError(f"manifest {path}, line {reader.line_num + 1}: not valid CSV ({exc})") from None
        return rows
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        if len(line) > MAX_FIELD_CHARS * 4:
            raise DataError(f"manifest {path}, line {n}: {len(line)} characters (limit {MAX_FIELD_CHARS * 4})")
        if _json_depth_exceeds(line, MAX_JSON_DEPTH):
            raise DataError(f"manifest {path}, line {n}: nested deeper than {MAX_JSON_DEPTH} levels (each line is one flat object)")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"manifest {path}, line {n}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DataError(f"manifest {path}, line {n}: nested too deeply") from None
        if not isinstance(row, dict) or "path" not in row:
            raise DataError(f"manifest {path}, line {n}: each line needs an object with a `path`")
        rows.append({"path": _row_field(path, n, row, "path", True), "caption": _row_field(path, n, row, "caption"),
                     "id": _row_field(path, n, row, "id"), "line": n, "extra": _extra(row)})
    return rows


def printable_name(name: str) -> str:
    """A file name as text every output can hold: the bytes of a name that is not UTF-8 (which
    Python keeps as lone surrogates, which SQLite, JSON and UTF-8 files refuse) as ``\\xNN``
    escapes; a UTF-8 name is returned unchanged. The id of a file is its printable name, so it
    stays the same on every run."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def manifest_id(group: str, given: str | None, path: str) -> str:
    """The id of a manifest row: ``<group>/<id column>``, else ``<group>/<path>``, where a path
    that already starts with the group's folder (``members/00.png`` in members.csv) is not
    prefixed twice (``members/00.png``, not ``members/members/00.png``)."""
    if given:
        return f"{group}/{given}"
    return path if path.startswith(f"{group}/") else f"{group}/{path}"


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
            ImageRecord(id=f"{group}/{printable_name(p.relative_to(path).as_posix())}", path=str(p), group=group)
            for p in files
        ]
    if path.suffix.lower() in MANIFEST_EXTS:
        records = []
        ids: set[str] = set()
        files: dict[str, int] = {}  # the file each row names (normalized) -> its line
        for row in _read_manifest(path):
            img = Path(row["path"]).expanduser()
            if not img.is_absolute():
                img = path.parent / img
            rid = manifest_id(group, row["id"], row["path"])
            if rid in ids:
                raise DataError(f"manifest {path}, line {row['line']}: repeats the image id {rid!r}")
            ids.add(rid)
            same = os.path.normcase(os.path.realpath(img))
            if same in files:  # under another id or spelling (./a.png, a link): it would count twice
                raise DataError(
                    f"manifest {path}, line {row['line']}: names the same file as line {files[same]} ({row['path']!r}); "
                    f"each image may be listed once"
                )
            files[same] = row["line"]
            records.append(ImageRecord(id=rid, path=str(img), caption=row["caption"], group=group, extra=row["extra"]))
        return records
    raise DataError(f"data.{group}: {path} is neither a folder nor a .csv/.jsonl manifest")


def check_file(path: str, max_pixels: int) -> str | None:
    """Why the file cannot be used, or None.

    Checks, in order: it exists and is a regular file (never opens a FIFO or a device), it is not
    empty, its header is an image format Pillow knows, its size is within ``max_pixels`` (read
    from the header, before any pixel is decoded: decompression bombs are refused cheaply), and it
    decodes completely (truncated or corrupt files are caught here, not in the middle of a run)."""
    if "\x00" in str(path):
        return "the path contains a NUL byte"
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
                frames = getattr(im, "n_frames", 1)
                if frames > 1:  # an animated GIF/APNG/WebP, a multi-page TIFF: which frame is the image?
                    return (f"{im.format} with {frames} frames (animated or multi-page); only still images are "
                            f"audited: save the frame you mean as a PNG")
                im.verify()  # checksums and structure, without decoding
            with Image.open(path) as im:
                im.load()  # a full decode: truncated data fails here
                to_8bit(im, fmt=im.format)  # a mode that cannot be converted is refused here, not mid-run
    except DataError as exc:
        return str(exc)
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


#: modes Pillow itself converts correctly to "L" and "RGB" (8 bits per channel)
DIRECT_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "PA", "CMYK", "YCbCr", "HSV"})
#: 16-bit greyscale (PNG, TIFF): scaled to 8 bits (65535 -> 255), never clipped
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
CONVERTED = "audit.converted"  # an image's info flag: its mode or orientation was changed on opening


def to_8bit(img: Image.Image, fmt: str | None = None) -> tuple[Image.Image, bool]:
    """``img`` in a mode that Pillow converts correctly to "L"/"RGB", and whether it was changed.

    Pillow's own conversion of the other modes is wrong for an audit: it clips 16-bit and float
    pixels to 0..255 (a 16-bit PNG becomes all white, a [0, 1] float TIFF all black) and cannot
    turn LAB into greyscale. So: 16-bit greyscale (``I;16*``, and ``I`` from a PNG, ``fmt``) is
    scaled by 255/65535; float (``F``) with every value in [0, 1] is scaled by 255; LAB becomes
    RGB (CIE L*a*b* to sRGB). Anything else (32-bit integers, floats outside [0, 1] or not
    finite, other modes) raises DataError naming the mode: it is refused, never guessed."""
    mode = img.mode
    if mode in DIRECT_MODES:
        return img, False
    if mode == "LAB":
        return img.convert("RGB"), True
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and fmt == "PNG"):
        arr = np.asarray(img).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"16-bit image (mode {mode}) with values outside 0..65535")
        return Image.fromarray(np.round(arr * (255 / 65535)).astype(np.uint8), "L"), True
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise DataError("float image (mode F) with NaN or infinite values")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise DataError(
                f"float image (mode F) with values in [{lo:g}, {hi:g}]: only [0, 1] is understood "
                f"(scale it to [0, 1], or save it as 8- or 16-bit)"
            )
        return Image.fromarray(np.round(arr * 255).astype(np.uint8), "L"), True
    if mode == "I":
        raise DataError("32-bit integer image (mode I): its value range is not defined (save it as 8- or 16-bit)")
    raise DataError(f"unsupported image mode {mode!r} (save it as 8- or 16-bit greyscale, or RGB)")


def orient(img: Image.Image) -> tuple[Image.Image, bool]:
    """``img`` turned upright by its EXIF orientation tag (any mode: greyscale JPEGs too), and
    whether it was turned. The result carries no orientation tag, so a second call is a no-op."""
    try:
        tag = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: there is no orientation to apply
        return img, False
    if tag in (None, 1):
        return img, False
    return ImageOps.exif_transpose(img), True


def open_image(record: ImageRecord, data: bytes | None = None) -> Image.Image:
    """A record's image, upright (EXIF) and in a mode Pillow converts correctly (see ``to_8bit``);
    ``data``: the file's bytes when the caller has already read them (decoded from memory)."""
    if record.array is not None:
        arr = np.asarray(record.array)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(arr)
    try:
        with Image.open(record.path if data is None else io.BytesIO(data)) as im:
            im.load()
            fmt = im.format
            img, turned = orient(im)
            img = img.copy() if img is im else img
    except Exception as exc:
        raise DataError(f"image {record.path} cannot be decoded: {exc}") from None
    try:
        img, converted = to_8bit(img, fmt)
    except DataError as exc:
        raise DataError(f"image {record.path}: {exc}") from None
    if turned or converted:
        img.info[CONVERTED] = True
    return img


def to_tensor(img: Image.Image, channels: int, size: int, center_crop: bool = True) -> tuple[torch.Tensor, bool]:
    """PIL image -> ``[C, size, size]`` float in [-1, 1]; also whether it was resized or converted.

    Orientation: the EXIF tag is applied (every mode). Modes: see ``to_8bit`` (16-bit and float
    scaled, LAB via RGB, others refused). Channels: 1 -> grayscale ("L"), 3 -> RGB, others ->
    repeated grayscale. Size: resize the shorter side to ``size`` (bicubic) then centre crop (or
    a plain resize)."""
    changed = bool(img.info.get(CONVERTED))
    img, turned = orient(img)
    img, converted = to_8bit(img)
    changed = changed or turned or converted
    want_mode = "L" if channels == 1 else "RGB"
    if img.mode != want_mode:
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
    ``converted`` holds the ids the target had to convert or resize (a note in results.json);
    ``hashes`` the sha256 of the bytes each image was decoded from (a file is read once, hashed
    and decoded from memory: the run's attestation binds the scored bytes without a second read)."""

    def __init__(self, preprocess, max_bytes: int = IMAGE_CACHE_BYTES):
        self.preprocess = preprocess  # PIL image -> ([C, H, W] tensor, converted?), the target's
        self.max_bytes = max_bytes
        self.converted: set[str] = set()
        self.hashes: dict[str, str] = {}
        self._cache: dict[str, torch.Tensor] = {}
        self._bytes = 0

    def load(self, records: list[ImageRecord]) -> torch.Tensor:
        """``[B, C, H, W]`` in [-1, 1] for these records."""
        out = []
        for r in records:
            t = self._cache.get(r.id)
            if t is None:
                t, changed = self.preprocess(self._open(r))
                if changed:
                    self.converted.add(r.id)
                if self._bytes + t.nbytes <= self.max_bytes:
                    self._cache[r.id] = t
                    self._bytes += t.nbytes
            out.append(t)
        return torch.stack(out)

    def _open(self, record: ImageRecord) -> Image.Image:
        """The record's image, its content hash recorded in ``hashes`` on the way."""
        if record.array is not None:
            self.hashes[record.id] = content_hash(record)
            return open_image(record)
        try:
            with open(record.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise DataError(f"image {record.path} cannot be read: {exc.strerror or exc}") from None
        self.hashes[record.id] = hashlib.sha256(data).hexdigest()
        return open_image(record, data)
