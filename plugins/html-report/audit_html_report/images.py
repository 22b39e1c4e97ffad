"""Gallery images as ``data:`` URIs: read only from inside the run directory, downsized so a
report of large images (Stable Diffusion, 512 px) stays a few MB."""

from __future__ import annotations

import base64
import io
from pathlib import Path

#: the longest side of an embedded image; small images (the 32 px demo) are embedded as they are
#: and scaled up by the browser with ``image-rendering: pixelated``
MAX_SIDE = 192


def inside(run_dir: Path, rel: object) -> Path | None:
    """``run_dir / rel`` when ``rel`` is a relative path that stays inside the run directory."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    p = Path(rel)
    if p.is_absolute():
        return None
    try:
        root = run_dir.resolve()
        full = (root / p).resolve()
        full.relative_to(root)
    except (OSError, ValueError, RuntimeError):
        return None
    return full if full.is_file() else None


def data_uri(run_dir: Path, rel: object, max_side: int = MAX_SIDE) -> str | None:
    """A PNG (or, for large photographic images, JPEG) data URI of the image, or None when the
    path is missing, outside the run directory or not an image."""
    path = inside(run_dir, rel)
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "RGB", "RGBA", "LA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            big = max(im.size) > max_side
            if big:
                im = im.copy()
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
            mime = "image/png"
            if big and im.mode in ("L", "RGB"):  # photographs: JPEG is several times smaller
                jbuf = io.BytesIO()
                im.save(jbuf, format="JPEG", quality=85)
                if jbuf.tell() < buf.tell():
                    buf, mime = jbuf, "image/jpeg"
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
