"""Pixels: decoding an image file (modes, 16-bit, orientation), PIL images to ``[-1, 1]``
tensors and back, base64 PNG (the http wire format)."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image, ImageOps

from ..base.errors import DataError
from ..base.records import ImageRecord

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
