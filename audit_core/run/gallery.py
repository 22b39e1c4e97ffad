"""The gallery: PNG triples (original, reconstruction, residual) of each attack's most and least
member-like images, written under ``<run_dir>/artifacts/<attack>/`` for the reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data import tensor_to_uint8
from ..base.errors import AuditError
from ..base.records import ImageRecord
from .store import disk_error

#: images per end (most / least member-like)
GALLERY_SIZE = 6


def safe_name(name: str) -> str:
    """A file-system-safe folder name for an attack entry (``rediffuse[n=5]`` -> ``rediffuse_n=5_``)."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)[:80] or "attack"


def save_png(path: Path, chw: np.ndarray, run_dir: Path, residual: bool = False) -> str:
    """Write a ``[C, H, W]`` array in [-1, 1] as PNG (a residual is stretched by its own maximum
    absolute value); return its path relative to ``run_dir``."""
    import torch
    from PIL import Image

    x = torch.as_tensor(np.asarray(chw, dtype=np.float32))
    if residual:
        x = x.abs()
        x = x / x.max().clamp_min(1e-8) * 2 - 1  # stretch to [-1, 1] for display
    arr = tensor_to_uint8(x)
    Image.fromarray(arr).save(path)
    return path.relative_to(run_dir).as_posix()


def gallery_paths(run_dir: Path, attack: str) -> list[Path]:
    """Every file :func:`write_gallery` may write for ``attack`` (listed in the run's manifest first)."""
    folder = run_dir / "artifacts" / safe_name(attack)
    return [folder / f"{rank:02d}_{kind}.png" for rank in range(2 * GALLERY_SIZE) for kind in ("original", "reconstruction", "residual")]


def write_gallery(
    run_dir: Path,
    attack: str,
    ids: list[str],
    scores: np.ndarray,
    labels: np.ndarray,
    maps: Callable[[list[str]], dict[str, tuple[Any, Any]]],
    records: dict[str, ImageRecord],
    load: Callable[[list[ImageRecord]], Any],
) -> list[dict]:
    """The gallery entries of one attack. ``maps(ids)`` returns the stored (residual,
    reconstruction) per id; ``load(records)`` the target-ready images ``[B, C, H, W]``."""
    order = np.argsort(-scores, kind="stable")
    picks = [("most member-like", j) for j in order[:GALLERY_SIZE]] + [
        ("least member-like", j) for j in order[::-1][:GALLERY_SIZE]
    ]
    stored = maps([ids[j] for _, j in picks])
    folder = run_dir / "artifacts" / safe_name(attack)
    out = []
    for rank, (kind, j) in enumerate(picks):
        image_id = ids[j]
        residual, recon = stored.get(image_id, (None, None))
        item: dict[str, Any] = {
            "kind": kind,
            "image_id": image_id,
            "label": int(labels[j]),
            "score": float(scores[j]),
            "caption": records[image_id].caption,
        }
        try:
            folder.mkdir(parents=True, exist_ok=True)
            original = load([records[image_id]])[0]
            item["original"] = save_png(folder / f"{rank:02d}_original.png", original.numpy(), run_dir)
            if recon is not None:
                item["reconstruction"] = save_png(folder / f"{rank:02d}_reconstruction.png", recon, run_dir)
            if residual is not None:
                item["residual"] = save_png(folder / f"{rank:02d}_residual.png", residual, run_dir, residual=True)
                # the PNG is stretched per image: its brightest pixel is this |x - x̂| ([-1, 1] pixel units)
                item["residual_max"] = float(np.abs(np.asarray(residual, dtype=np.float32)).max())
        except AuditError:
            continue
        except OSError as exc:
            raise disk_error(exc, str(folder)) from None
        out.append(item)
    return out
