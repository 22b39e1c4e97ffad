"""Data sources: the ``data:`` entries of audit.yaml (builtin datasets, folders, CSV/JSONL
manifests) as image records, every file checked before anything is written (``load_records``)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..base.errors import DataError
from ..base.records import ImageRecord
from .images import to_8bit
from .manifest import _read_manifest, manifest_id

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


def _unknown(datasets: dict, name: str) -> str:
    return f"unknown dataset {name!r} (available: {', '.join(sorted(datasets)) or 'none'})"


def resolve_source(
    spec: str, group: str, base_dir: Path, datasets: dict, follow_symlinks: bool = True, unknown: Callable[[str], str] | None = None
) -> list[ImageRecord]:
    """Records of one ``data:`` entry (without label). ``unknown(name)`` words a dataset name
    that ``datasets`` lacks (the plugin layer's: did-you-mean, clashes, qualified names)."""
    if spec.startswith("builtin:"):
        name, _, subset = spec[len("builtin:"):].partition("/")
        if name not in datasets:
            raise DataError(f"data.{group}: {unknown(name) if unknown else 'built-in ' + _unknown(datasets, name)}")
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


def load_records(cfg_data, base_dir: Path, datasets: dict, unknown: Callable[[str], str] | None = None) -> LoadedData:
    """All records of the config's data section, labelled and checked (``unknown``: see
    :func:`resolve_source`)."""
    mode = cfg_data.mode
    groups = ("members", "nonmembers") if mode == "evaluation" else ("suspects", "reference")
    records: list[ImageRecord] = []
    notes: list[str] = []
    if cfg_data.dataset is not None and all(getattr(cfg_data, g) is None for g in groups):
        if cfg_data.dataset not in datasets:
            name = cfg_data.dataset
            raise DataError(f"data.dataset: {unknown(name) if unknown else _unknown(datasets, name)}")
        opts = {"root": cfg_data.root, "split": cfg_data.split, "base_dir": str(base_dir)}
        by_group = {g: list(datasets[cfg_data.dataset](g, opts)) for g in groups}
    else:
        by_group = {
            g: resolve_source(getattr(cfg_data, g), g, base_dir, datasets, cfg_data.follow_symlinks, unknown) for g in groups
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
