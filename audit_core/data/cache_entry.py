"""One query-cache entry as bytes: ``MAGIC``, one JSON header line (``{"key", "dtype", "shape",
"sha256"}``) and the raw little-endian float32 array. ``decode_entry`` verifies all of it (key,
dtype, byte count for the shape, checksum) and says what is wrong otherwise."""

from __future__ import annotations

import hashlib
import json

import numpy as np

MAGIC = b"AUDITQC2\n"
MAX_HEADER = 4096  # bytes: a longer first line is not one of our headers
DTYPES = {"<f4": np.float32}  # what put() writes; anything else is a damaged entry


def encode_entry(key: str, arr: np.ndarray) -> bytes:
    """The bytes of one entry: magic, JSON header (key, dtype, shape, sha256), raw data."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    payload = arr.astype("<f4", copy=False).tobytes()
    header = {"key": key, "dtype": "<f4", "shape": list(arr.shape), "sha256": hashlib.sha256(payload).hexdigest()}
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def decode_entry(key: str, data: bytes) -> np.ndarray:
    """The array of an entry; ``ValueError`` saying what is wrong when it does not verify."""
    if not data.startswith(MAGIC):
        raise ValueError("not a query-cache entry (bad magic)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if end < 0:
        raise ValueError("no header")
    try:
        header = json.loads(data[len(MAGIC) : end])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ValueError("unreadable header") from None
    if not isinstance(header, dict):
        raise ValueError("unreadable header")
    if header.get("key") != key:
        raise ValueError("the entry belongs to another key")
    dtype = DTYPES.get(header.get("dtype"))
    if dtype is None:
        raise ValueError(f"unexpected dtype {header.get('dtype')!r}")
    shape = header.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"bad shape {shape!r}")
    payload = data[end + 1 :]
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(payload) != expected:
        raise ValueError(f"{len(payload)} data bytes for shape {shape} (expected {expected})")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError("checksum mismatch")
    return np.frombuffer(payload, dtype="<f4").astype(np.float32).reshape(shape)
