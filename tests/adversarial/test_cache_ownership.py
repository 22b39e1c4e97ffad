"""Data loss and silently wrong results in the query cache (issue 18): the cache owns only its
entries in a folder it marked; every entry is verified (key, dtype, shape, sha256) on read."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from audit_core.data.cache import MARKER, QueryCache, decode_entry, encode_entry
from audit_core.base.errors import ConfigError

KEY = "ab" + "c" * 62


def user_files(root):
    """Files a user keeps next to (or inside) a cache folder: shaped like the old `*/*.npy`."""
    files = {
        root / "ab" / "my-features.npy": b"user data 1",
        root / "experiments" / "run1.npy": b"user data 2",
        root / "cd" / ("cd" + "0" * 61 + ".npy"): b"63 hex digits: not a key",
        root / "ab" / ".stale.tmp": b"a user's temp file",
        root / "notes.txt": b"user data 3",
    }
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def test_clear_refuses_a_folder_of_user_files(tmp_path, audit_cli):
    files = user_files(tmp_path / "data")
    code, output = audit_cli("cache", "clear", "--dir", tmp_path / "data")
    assert code == 2 and "not an audit query cache" in " ".join(output.split())
    assert all(p.read_bytes() == d for p, d in files.items())  # before: *.npy files were deleted


def test_a_run_refuses_a_cache_dir_holding_user_files(toy, refuse, tmp_path):
    files = user_files(tmp_path / "data")
    msg = refuse(toy(cache={"enabled": True, "dir": str(tmp_path / "data")}))
    assert "cache.dir" in msg and "not the audit query cache" in msg and MARKER in msg
    assert all(p.read_bytes() == d for p, d in files.items())
    assert not (tmp_path / "data" / MARKER).exists()  # nothing was written there


def test_clear_and_eviction_in_a_marked_cache_spare_foreign_files(tmp_path):
    cache = QueryCache(tmp_path / "c", max_bytes=0)
    assert (tmp_path / "c" / MARKER).is_file()
    cache.put(KEY, torch.ones(1, 4, 4))
    files = user_files(tmp_path / "c")  # put there later, by hand
    cache.max_bytes = 1  # every entry must go
    assert cache.trim() == 1
    assert all(p.read_bytes() == d for p, d in files.items())
    cache.max_bytes = 0
    cache.put(KEY, torch.ones(1, 4, 4))
    assert cache.clear() == 1
    assert all(p.read_bytes() == d for p, d in files.items())
    assert cache.info()["entries"] == 0


def test_wrong_content_of_the_right_shape_is_a_miss_with_a_note(tmp_path, caplog):
    cache = QueryCache(tmp_path / "c")
    cache.put(KEY, torch.zeros(1, 4, 4))
    p = cache._path(KEY)
    data = bytearray(p.read_bytes())
    data[-4:] = np.float32(0.5).tobytes()  # same shape and dtype, one value changed
    p.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="audit.cache"):
        assert cache.get(KEY) is None  # before: the tampered tensor was served
    assert cache.damaged == 1 and "checksum mismatch" in cache.notes[0] and str(p) in caplog.text


@pytest.mark.parametrize(
    "mangle, why",
    [
        (lambda d: d.replace(b'"shape":[1,4,4]', b'"shape":[1,4,2]'), "data bytes for shape"),
        (lambda d: d.replace(b'"dtype":"<f4"', b'"dtype":"|O8"'), "unexpected dtype"),
        (lambda d: d.replace(b"ab" + b"c" * 62, b"ab" + b"d" * 62), "another key"),
        (lambda d: d[:40], "no header"),
        (lambda d: b"\x93NUMPY" + d, "bad magic"),
    ],
)
def test_entry_header_is_verified(mangle, why):
    good = encode_entry(KEY, np.zeros((1, 4, 4), np.float32))
    assert decode_entry(KEY, good).shape == (1, 4, 4)
    with pytest.raises(ValueError, match=why):
        decode_entry(KEY, mangle(good))


def test_previous_version_cache_is_adopted_not_deleted(tmp_path, audit_cli):
    old = tmp_path / "old"
    legacy = old / "ab" / f"{KEY}.npy"
    legacy.parent.mkdir(parents=True)
    np.save(legacy, np.ones((1, 4, 4), np.float32))
    cache = QueryCache(old)  # adopted: only cache files in it
    assert (old / MARKER).is_file()
    assert cache.get(KEY) is None  # no checksum: a miss, never served
    assert cache.info()["legacy_entries"] == 1
    code, output = audit_cli("cache", "info", "--dir", old)
    assert code == 0 and "--legacy" in output
    assert cache.clear() == 0 and legacy.exists()  # plain clear leaves them
    assert cache.clear(legacy=True) == 1 and not legacy.exists()


def test_marker_content(tmp_path):
    QueryCache(tmp_path / "c")
    marker = json.loads((tmp_path / "c" / MARKER).read_text())
    assert marker["format"] == "audit-query-cache" and marker["version"] == 2


def test_cache_clear_on_an_empty_or_missing_folder(tmp_path, audit_cli):
    (tmp_path / "empty").mkdir()
    assert audit_cli("cache", "clear", "--dir", tmp_path / "empty")[0] == 0
    code, output = audit_cli("cache", "clear", "--dir", tmp_path / "never")
    assert code == 0 and "removed 0" in output and not (tmp_path / "never").exists()


def test_constructor_refuses_foreign_folder(tmp_path):
    user_files(tmp_path / "d")
    with pytest.raises(ConfigError, match="not the audit query cache"):
        QueryCache(tmp_path / "d")
