"""Copyright mode's data preflight: do the suspects and the reference look alike as *files*?

Before any query (and before the model loads) the two sets are compared on what their files say
about how they were made: file format, pixel size, mode (RGB, greyscale, palette, ...), bit depth
and, for JPEGs, the quality they were saved at (estimated from the quantisation tables). A
systematic difference there (the suspects are phone JPEGs of mixed sizes, the reference clean
PNGs of one size) changes every attack's score for reasons that have nothing to do with training,
in either direction: it can fake evidence or hide it. Only headers are read (no pixel decoding),
so the check costs milliseconds per image.

Each difference is one warning (printed, kept in ``results.json`` under
``set_inference.preflight`` and shown in the report); with ``inference.strict_preflight: true``
the first one stops the run with exit 2 before anything is scored.

Rules (categorical properties: format, mode, bit depth): the share of each value in the two sets is
compared, and a warning is raised when the total-variation distance (half the summed absolute
differences of the shares) is at least :data:`MISMATCH` (0.2): e.g. 100 % JPEG vs 100 % PNG is 1.0,
90 % vs 70 % PNG is 0.2. Sizes: a warning when the median pixel count differs by a factor of
:data:`SIZE_RATIO` (1.5) or more, or when one set has a single size and the other has many
(fewer than :data:`ONE_SIZE` (90 %) of its images at its most common size). JPEG quality: a
warning when both sets hold JPEGs whose median estimated quality differs by :data:`QUALITY_GAP`
(10) or more.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..base.records import ImageRecord

MISMATCH = 0.2  # total-variation distance of a categorical property from which the sets differ
SIZE_RATIO = 1.5  # median pixel counts this far apart differ
ONE_SIZE = 0.9  # a set "has one size" when at least this share of it has its most common size
QUALITY_GAP = 10  # JPEG qualities this far apart (median) differ

#: the IJG (libjpeg) standard luminance quantisation table at quality 50, in natural (row) order
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)

#: bits per channel of Pillow's modes
_BITS = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "RGBX": 8, "LA": 8, "PA": 8, "CMYK": 8, "YCbCr": 8,
         "LAB": 8, "HSV": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}


def _ijg_table(quality: int) -> np.ndarray:
    """The luminance table libjpeg writes at ``quality`` (1..100)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_STD_LUMA * scale + 50) / 100), 1, 255)


_TABLES = np.stack([_ijg_table(q) for q in range(1, 101)])


def jpeg_quality(quantization: dict | None) -> int | None:
    """The libjpeg quality (1..100) whose standard luminance table is closest to table 0 of a
    JPEG's ``quantization`` (Pillow's ``im.quantization``, natural order), or None without one.
    Exact for files written by libjpeg-based encoders (Pillow, most cameras' software and web
    tools); for custom tables it is the closest standard quality, a fair summary of how hard the
    file was compressed."""
    if not quantization or 0 not in quantization:
        return None
    table = np.asarray(list(quantization[0]), dtype=np.float64)
    if table.size != 64:
        return None
    err = np.abs(np.log(_TABLES) - np.log(np.maximum(table, 1))).sum(axis=1)
    return int(np.argmin(err)) + 1


def _png_bit_depth(path: str) -> int | None:
    """A PNG's bit depth per channel from its IHDR chunk (Pillow reduces 16-bit RGB to 8 bits)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(25)
    except OSError:
        return None
    return head[24] if len(head) == 25 and head[12:16] == b"IHDR" else None


def describe(record: ImageRecord) -> dict[str, Any]:
    """``{"format", "mode", "bits", "width", "height", "quality"}`` of one record, from its header."""
    if record.array is not None:
        a = np.asarray(record.array)
        bits = 8 if a.dtype == np.uint8 else 8 * a.dtype.itemsize
        mode = "L" if a.ndim == 2 else {1: "L", 3: "RGB", 4: "RGBA"}.get(a.shape[2], f"{a.shape[2]} channels")
        return {"format": "array", "mode": mode, "bits": bits, "width": int(a.shape[1]), "height": int(a.shape[0]), "quality": None}
    from PIL import Image

    try:
        with Image.open(record.path) as im:  # lazy: the header only
            fmt, mode, (w, h) = im.format or "unknown", im.mode, im.size
            quality = jpeg_quality(getattr(im, "quantization", None)) if fmt == "JPEG" else None
    except Exception:  # noqa: BLE001 - unreadable files are data.py's business (on_error)
        return {"format": "unreadable", "mode": "unknown", "bits": None, "width": None, "height": None, "quality": None}
    bits = _png_bit_depth(record.path) if fmt == "PNG" and mode not in ("1", "P") else None
    return {"format": fmt, "mode": mode, "bits": bits or _BITS.get(mode), "width": w, "height": h, "quality": quality}


def _shares(values: list) -> dict[str, float]:
    c = Counter(str(v) for v in values)
    n = sum(c.values())
    return {k: v / n for k, v in c.most_common()}


def summarize(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """A set's summary: counts per format, mode and bit depth, sizes and JPEG qualities."""
    sizes = Counter(f"{d['width']}x{d['height']}" for d in infos if d["width"])
    pixels = [d["width"] * d["height"] for d in infos if d["width"]]
    qualities = [d["quality"] for d in infos if d["quality"] is not None]
    common = sizes.most_common(1)
    return {
        "n": len(infos),
        "formats": dict(Counter(str(d["format"]) for d in infos).most_common()),
        "modes": dict(Counter(str(d["mode"]) for d in infos).most_common()),
        "bit_depths": dict(Counter(str(d["bits"]) for d in infos).most_common()),
        "sizes": {
            "distinct": len(sizes),
            "most_common": common[0][0] if common else None,
            "most_common_share": round(common[0][1] / len(pixels), 4) if common else None,
            "median_pixels": float(np.median(pixels)) if pixels else None,
            "smallest": min(sizes, key=lambda s: int(s.split("x")[0]) * int(s.split("x")[1])) if sizes else None,
            "largest": max(sizes, key=lambda s: int(s.split("x")[0]) * int(s.split("x")[1])) if sizes else None,
        },
        "jpeg_quality": {
            "n": len(qualities), "median": float(np.median(qualities)), "min": min(qualities), "max": max(qualities),
        } if qualities else None,
    }


def _tv(a: list, b: list) -> float:
    sa, sb = _shares(a), _shares(b)
    return 0.5 * sum(abs(sa.get(k, 0.0) - sb.get(k, 0.0)) for k in set(sa) | set(sb))


def _listing(counts: dict[str, int], n: int) -> str:
    return ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in list(counts.items())[:4]) + (", ..." if len(counts) > 4 else "")


def compare(sus: list[dict[str, Any]], ref: list[dict[str, Any]]) -> list[str]:
    """The warnings for suspects ``sus`` vs reference ``ref`` (each a list of :func:`describe`)."""
    out: list[str] = []
    s_sum, r_sum = summarize(sus), summarize(ref)
    for key, what, field in (("format", "file format", "formats"), ("mode", "image mode", "modes"), ("bits", "bit depth", "bit_depths")):
        tv = _tv([d[key] for d in sus], [d[key] for d in ref])
        if tv >= MISMATCH:
            out.append(
                f"{what} differs: suspects {_listing(s_sum[field], len(sus))}; reference "
                f"{_listing(r_sum[field], len(ref))}"
            )
    ss, rs = s_sum["sizes"], r_sum["sizes"]
    if ss["median_pixels"] and rs["median_pixels"]:
        ratio = ss["median_pixels"] / rs["median_pixels"]
        one_s, one_r = ss["most_common_share"] >= ONE_SIZE, rs["most_common_share"] >= ONE_SIZE

        def said(s: dict) -> str:
            if s["most_common_share"] >= ONE_SIZE:
                return f"{s['most_common']}" + ("" if s["distinct"] == 1 else f" ({100 * s['most_common_share']:.0f}%)")
            return f"{s['distinct']} sizes from {s['smallest']} to {s['largest']}"

        if ratio >= SIZE_RATIO or ratio <= 1 / SIZE_RATIO:
            out.append(f"pixel size differs: suspects {said(ss)}; reference {said(rs)} (median pixel counts {ratio:.2g}x apart)")
        elif one_s != one_r:
            out.append(f"pixel size differs: suspects {said(ss)}; reference {said(rs)}")
        elif one_s and one_r and ss["most_common"] != rs["most_common"]:
            out.append(f"pixel size differs: suspects {said(ss)}; reference {said(rs)}")
    sq, rq = s_sum["jpeg_quality"], r_sum["jpeg_quality"]
    if sq and rq and abs(sq["median"] - rq["median"]) >= QUALITY_GAP:
        out.append(f"JPEG quality differs: suspects about {sq['median']:.0f}; reference about {rq['median']:.0f} (estimated from the quantisation tables)")
    elif (sq is None) != (rq is None):
        who, q = ("suspects", sq) if sq else ("reference", rq)
        share = q["n"] / (len(sus) if who == "suspects" else len(ref))
        if share >= MISMATCH:  # the format warning says JPEG vs not; this says how hard
            out.append(f"only the {who} are JPEG-compressed ({100 * share:.0f}% of them, quality about {q['median']:.0f})")
    return out


def preflight(records: list[ImageRecord]) -> dict[str, Any]:
    """``{"warnings", "suspects", "reference"}`` for copyright mode's records (label 1 = suspect)."""
    sus = [describe(r) for r in records if r.label == 1]
    ref = [describe(r) for r in records if r.label == 0]
    return {"warnings": compare(sus, ref), "suspects": summarize(sus), "reference": summarize(ref)}


def check(loaded: Any, data: Any, console: Any = None) -> dict[str, Any] | None:
    """Run the preflight on a copyright run's data (None in evaluation mode): print every warning,
    and with ``inference.strict_preflight`` refuse the run (ConfigError, exit 2) naming the first."""
    if data.mode != "copyright":
        return None
    block = preflight(data.records)
    if block["warnings"] and loaded.cfg.inference.strict_preflight:
        from ..base.errors import ConfigError

        more = f" (and {len(block['warnings']) - 1} more)" if len(block["warnings"]) > 1 else ""
        raise ConfigError(
            f"inference.strict_preflight ({loaded.where('inference', 'strict_preflight')}): suspects and reference "
            f"files differ, so scores would differ for reasons other than training: {block['warnings'][0]}{more}. "
            f"Make both sets alike (same format, size and compression), or set strict_preflight: false to run anyway."
        )
    if console is not None:
        from . import console as term

        for w in block["warnings"]:
            term.warn(console, f"preflight: {w}")
    return block
