"""Image records: what data sources return and the runner loads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

#: the ``label`` column of scores.csv per data mode, indexed by the record's label (0, 1)
LABEL_NAMES = {"evaluation": ("nonmember", "member"), "copyright": ("reference", "suspect")}

#: results.json ``set_inference`` keys that are not attacks: the combined test and the run-level
#: blocks (data preflight, split-reference sanity check, blind baseline, power figure)
SET_INFERENCE_BLOCKS = ("combined", "preflight", "sanity", "blind", "power")


@dataclass
class ImageRecord:
    """One image. Either ``path`` (read lazily) or ``array`` (in memory) is set.

    ``array`` is ``uint8 [H, W]`` or ``[H, W, C]`` (or float in [0, 1]). ``id`` must be unique
    and stable across runs: per-image seeds derive from it.
    """

    id: str
    path: str | None = None
    array: np.ndarray | None = None
    caption: str | None = None
    label: int | None = None  # 1 = member / suspect, 0 = non-member / reference
    group: str = ""  # members | nonmembers | suspects | reference
    #: a manifest's other non-empty columns (e.g. ``class``), as strings; see ``Target.condition``
    extra: dict[str, str] = field(default_factory=dict)


def content_hash(record: ImageRecord) -> str:
    """sha256 of an image's content: its file's bytes, or its array's shape, dtype and bytes. The
    core's one content digest: a resumed run rescores an image whose digest changed since it was
    scored (the run store keeps them), the attestation binds the scored images by it, and
    ``audit verify`` recomputes it; its value for a given image never changes (old runs resume).
    An unreadable file raises ``OSError``."""
    h = hashlib.sha256()
    if record.array is not None:
        a = np.ascontiguousarray(record.array)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    else:
        with open(record.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
