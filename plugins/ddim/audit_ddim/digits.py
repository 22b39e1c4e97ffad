"""The built-in ``digits`` dataset: scikit-learn's 1,797 real 8x8 handwritten digits at 16x16.

Use it in audit.yaml as ``builtin:digits/members``, ``builtin:digits/nonmembers`` or
``builtin:digits/all``. The member/non-member split is a fixed index manifest shipped with the
package (``demo/digits_split.json``, generated once from a recorded seed), so it never changes
between versions of scikit-learn or numpy. The demo model ``builtin:digits-ddpm`` was trained on
the members only.

Image ids are ``digits-NNNN`` where NNNN is the image's index in ``load_digits()``; per-image seeds
derive from these ids, so they must stay stable.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from audit_core import DataError, ImageRecord

SPLIT_FILE = Path(__file__).parent / "demo" / "digits_split.json"
SIZE = 16  # the 8x8 digits are upscaled (bilinear) to SIZE x SIZE
SUBSETS = ("members", "nonmembers", "all")
#: aliases for the copyright-holder mode (suspects = members, reference = non-members)
ALIASES = {"suspects": "members", "reference": "nonmembers"}


@lru_cache(maxsize=1)
def split() -> dict[str, Any]:
    """The shipped split manifest: ``{"seed", "members": [idx...], "nonmembers": [idx...], ...}``."""
    with open(SPLIT_FILE, encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=1)
def images() -> np.ndarray:
    """All 1,797 digits as ``uint8 [N, 16, 16]`` (0..16 scaled to 0..255, then bilinear 2x)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    raw = load_digits().images  # float [N, 8, 8] in 0..16
    if len(raw) != split()["n_images"]:
        raise DataError(
            f"scikit-learn's load_digits returned {len(raw)} images, the split manifest "
            f"{SPLIT_FILE} expects {split()['n_images']}"
        )
    small = np.clip(np.round(raw * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for im in small]
    )


def indices(subset: str) -> list[int]:
    """The load_digits indices of a subset (``members``, ``nonmembers`` or ``all``)."""
    subset = ALIASES.get(subset, subset)
    if subset == "all":
        return sorted(split()["members"] + split()["nonmembers"])
    if subset in ("members", "nonmembers"):
        return list(split()[subset])
    raise DataError(
        f"builtin:digits has no subset {subset!r}; use builtin:digits/members, "
        f"builtin:digits/nonmembers or builtin:digits/all"
    )


def image_id(index: int) -> str:
    return f"digits-{index:04d}"


def load(subset: str, options: dict | None = None) -> list[ImageRecord]:
    """The ``register_datasets`` loader: image records (in memory, ``uint8 [16, 16]``)."""
    subset = subset or "all"
    idx = indices(subset)
    members = set(split()["members"])
    arr = images()
    return [
        ImageRecord(id=image_id(i), array=arr[i], label=int(i in members), group=ALIASES.get(subset, subset))
        for i in idx
    ]


def as_tensor(subset: str):
    """A subset as a float tensor ``[N, 1, 16, 16]`` in [-1, 1] (what training and tests use)."""
    import torch

    arr = images()[indices(subset)].astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr)[:, None]
