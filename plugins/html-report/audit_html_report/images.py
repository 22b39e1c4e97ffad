"""Gallery images as ``data:`` URIs: read only from inside the run directory, downsized so a
report of large images (Stable Diffusion, 512 px) stays a few MB."""

from __future__ import annotations

import base64
import io
from pathlib import Path

#: the longest side of an embedded image; small images (the 32 px demo) are embedded as they are
#: and scaled up by the browser with ``image-rendering: pixelated``
MAX_SIDE = 192

#: the residual colour scale (magma-like: dark = no difference, light yellow = the largest); the
#: report's legend is a CSS gradient through the same stops
RESIDUAL_STOPS = ((0.0, "#000004"), (0.25, "#3b0f70"), (0.5, "#8c2981"), (0.75, "#de4968"), (0.9, "#fe9f6d"), (1.0, "#fcfdbf"))


def _lut() -> "np.ndarray":
    import numpy as np

    pos = [p for p, _ in RESIDUAL_STOPS]
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for _, c in RESIDUAL_STOPS], dtype=np.float64)
    x = np.linspace(0, 1, 256)
    return np.stack([np.interp(x, pos, rgb[:, j]) for j in range(3)], axis=1).round().astype(np.uint8)


def colour_residual(im):
    """A grey residual (0 = identical, 255 = the image's largest difference) in the colour scale;
    colour residuals are averaged over channels first."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(im.convert("L"))
    return Image.fromarray(_lut()[grey], "RGB")


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


def data_uri(run_dir: Path, rel: object, max_side: int = MAX_SIDE, residual: bool = False) -> str | None:
    """A PNG (or, for large photographic images, JPEG) data URI of the image, or None when the
    path is missing, outside the run directory or not an image. ``residual``: map the grey
    residual map onto the colour scale (RESIDUAL_STOPS)."""
    path = inside(run_dir, rel)
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if residual:
                im = colour_residual(im)
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
