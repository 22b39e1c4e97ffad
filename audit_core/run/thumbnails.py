"""Copyright mode: one small thumbnail per suspect in the run directory, for the report's
per-suspect table (reporters read only the run directory, never the suspects' own files).

``artifacts/thumbnails/<sha256(image id)[:20]>.png``: the image as opened for the audit (upright,
8 bits), its longest side at most :data:`SIDE` pixels. The name is a hash of the id, so any id
(slashes, unicode, ...) maps to a safe and distinct file; :func:`thumbnail_path` gives it to a
reporter. At most :data:`MAX_IMAGES` suspects get one (in data order); the rest are listed
without a picture."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..base.records import ImageRecord

FOLDER = "artifacts/thumbnails"
SIDE = 64
MAX_IMAGES = 2000


def thumbnail_path(image_id: str) -> str:
    """The thumbnail of ``image_id``, relative to the run directory."""
    return f"{FOLDER}/{hashlib.sha256(str(image_id).encode()).hexdigest()[:20]}.png"


def paths(run_dir: Path, ids: list[str]) -> list[Path]:
    """Every file :func:`write` may write for ``ids`` (listed in the run's manifest first)."""
    return [run_dir / thumbnail_path(i) for i in ids[:MAX_IMAGES]]


def write(run_dir: Path, records: list[ImageRecord]) -> int:
    """Write the thumbnails of ``records`` (at most MAX_IMAGES); an image that cannot be read gets
    none. Returns how many were written."""
    from PIL import Image

    from ..data import open_image
    from ..base.errors import DataError

    folder = run_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    for r in records[:MAX_IMAGES]:
        try:
            img = open_image(r)
        except DataError:
            continue
        img = img.convert("RGBA" if img.mode in ("RGBA", "LA", "PA") else ("L" if img.mode in ("1", "L") else "RGB"))
        img.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS if max(img.size) > SIDE else Image.Resampling.NEAREST)
        img.save(run_dir / thumbnail_path(r.id), optimize=True)
        done += 1
    return done
