"""Data sources and image loading.

A source in ``data:`` is one of
- ``builtin:NAME/SUBSET``: a dataset registered through the ``register_datasets`` hook;
- a folder of images (searched recursively, sorted, ids = relative paths);
- a CSV or JSONL manifest with a ``path`` column (relative to the manifest) and optional
  ``caption`` and ``id`` columns; other columns (e.g. ``class``) are kept in ``ImageRecord.extra``.

Every file is checked before anything is written (readable, non-empty, a decodable image, within
the pixel limit, no symlink loop). Bad files are all listed in one error, or skipped and recorded
with ``data.on_error: skip``.

The sources live in ``data/sources.py`` (manifests in ``data/manifest.py``), the pixels in
``data/images.py``; the run's ``ImageLoader`` here (it decodes through this package's
``open_image``).
"""

from __future__ import annotations

import hashlib

import torch
from PIL import Image

from ..base.errors import DataError
from ..base.records import ImageRecord, content_hash  # noqa: F401  (content_hash lived here)

# the package's names, from the modules they live in now (everything stays importable from here)
from .images import (  # noqa: F401
    CONVERTED, DIRECT_MODES, SIXTEEN_BIT_MODES, b64_bytes, open_image, orient, png_b64, tensor_to_uint8, to_8bit, to_tensor,
)
from .manifest import (  # noqa: F401
    MAX_FIELD_CHARS, MAX_JSON_DEPTH, MAX_MANIFEST_BYTES, _extra, _json_depth_exceeds, _manifest_text, _read_manifest,
    _row_field, manifest_id,
)
from .sources import (  # noqa: F401
    IMAGE_EXTS, MANIFEST_EXTS, LoadedData, _pil_pixel_limit, _walk_images, check_file, load_records, printable_name,
    resolve_source,
)


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
