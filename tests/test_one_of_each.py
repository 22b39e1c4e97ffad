"""One LRU, one content hash, one atomic writer (issue 29): each concept lives in one function or
class of audit_core/base/ that every user goes through, and keeps the values already on disk."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import audit_core
from audit_core.base import atomic, lru, records
from audit_core.base.records import ImageRecord

CORE = Path(audit_core.__file__).resolve().parent


def core_sources():
    for p in sorted(CORE.rglob("*.py")):
        yield p.relative_to(CORE).as_posix(), p.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------- one LRU
def test_lru_drops_the_least_recently_used_first():
    c = lru.LRU(30, size=len)
    c.put("a", "x" * 10)
    c.put("b", "x" * 10)
    c.put("c", "x" * 10)
    assert c.get("a") == "x" * 10  # a is now the most recent: b goes first
    c.put("d", "x" * 10)
    assert list(c) == ["c", "a", "d"] and c.bytes == 30 and c.evicted == 1
    c.put("a", "y" * 5)  # replacing a key counts its new size only
    assert c.bytes == 25 and list(c) == ["c", "d", "a"]


def test_lru_deferred_trim_and_the_last_value():
    c = lru.LRU(10, size=len)
    c.put("a", "x" * 8, trim=False)
    c.put("b", "x" * 8, trim=False)
    assert len(c) == 2 and c.bytes == 16  # the caller reads both before anything is dropped
    assert c.trim() == 1 and list(c) == ["b"]
    c.put("big", "x" * 50)
    assert list(c) == ["big"]  # the last value is kept, however large
    assert lru.LRU(0, size=len).trim() == 0  # 0: no cap
    uncapped = lru.LRU(0, size=len)
    for i in range(5):
        uncapped.put(str(i), "x" * 100)
    assert len(uncapped) == 5


def test_memory_cache_is_the_lru():
    from audit_core.data.cache import MemoryCache

    m = MemoryCache(max_bytes=2 * 16)  # two float32 [4] tensors
    assert isinstance(m, lru.LRU)
    m.put("a", torch.ones(4, dtype=torch.float64))
    m.put("b", torch.ones(4))
    m.get("a")
    m.put("c", torch.ones(4))
    assert m.get("b") is None and m.get("a").dtype == torch.float32 and len(m) == 2 and m.evicted == 1


class _FakeVae:
    """An ``AutoencoderKL`` stand-in: the latent is the image's first channel, halved."""

    def __init__(self):
        self.rows = 0

    def encode(self, x):
        self.rows += x.shape[0]
        mean = x[:, :1] * 0.5
        return type("Out", (), {"latent_dist": type("Dist", (), {"mean": mean})()})()


def _latent_target(cap_images: int):
    from audit_core.plugin.targets import TargetParams, VaeLatentTarget

    class Latent(VaeLatentTarget):  # sets self.vae itself, without _use_vae
        LATENT_CACHE_BYTES = cap_images * 1 * 2 * 2 * 4

        def __init__(self):
            super().__init__(TargetParams())
            self.device, self.dtype, self.scaling_factor = torch.device("cpu"), torch.float32, 2.0
            self.vae = _FakeVae()

    return Latent()


def test_latent_cache_is_the_lru():
    t = _latent_target(cap_images=2)
    x = torch.arange(3 * 3 * 2 * 2, dtype=torch.float32).reshape(3, 3, 2, 2) / 36
    z = t.encode(torch.cat([x, x[:1]]))  # the repeated image is encoded once
    assert isinstance(t._latents, lru.LRU) and t.vae.rows == 3
    assert torch.equal(z[0], z[3]) and torch.equal(z[1], x[1, :1])
    assert list(t._latents) == [t._latent_key(x[2]), t._latent_key(x[0])]  # x[1] was the least recently used
    t.encode(x[2:])
    assert t.vae.rows == 3  # served from memory
    t.encode(x[1:2])
    assert t.vae.rows == 4  # dropped before, encoded again


def test_one_lru_in_the_core():
    users = [name for name, src in core_sources() if "OrderedDict" in src]
    assert users == ["base/lru.py"], users


# --------------------------------------------------------------------------------- one content hash
#: digests written into run stores, attestations and verify checks by earlier versions: pinned
ARRAY_U8 = "797ea1d460ae01abdd77a600ade2dd6a5c2fe079ce01a478a94972d94b9bd8fb"
ARRAY_F32 = "8ee208914c8d899c27e56bd70a6cbae4ebd32cd812625a0aa18b0fa67f0c3e86"
FILE = "e90137d39de304eefbbe788bc535c7e82f27abbf8069505fbbd8a9dcdc4f2024"


def test_content_hash_keeps_the_digests_on_disk(tmp_path):
    a = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert records.content_hash(ImageRecord(id="a", array=a)) == ARRAY_U8
    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    assert records.content_hash(ImageRecord(id="f", array=f)) == ARRAY_F32
    p = tmp_path / "x.png"
    p.write_bytes(b"not really a png")
    assert records.content_hash(ImageRecord(id="p", path=str(p))) == FILE


def test_one_content_hash_everywhere(tmp_path):
    import audit_core.data as data
    from audit_core.run import preflight, runner

    assert data.content_hash is records.content_hash is preflight.content_hash is runner.content_hash
    defs = [name for name, src in core_sources() if re.search(r"^def content_hash\b", src, re.M)]
    assert defs == ["base/records.py"], defs


def test_identical_sets_check_uses_the_one_hash(tmp_path):
    from audit_core.run import preflight

    a = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    gone = ImageRecord(id="gone", path=str(tmp_path / "missing.png"), label=0)
    data = type("D", (), {"mode": "evaluation", "records": [
        ImageRecord(id="m", array=a, label=1), ImageRecord(id="n", array=a.copy(), label=0), gone,
    ]})()
    msg = preflight.identical_across_sets(data)  # an unreadable file is skipped, not an error
    assert msg is not None and "m = n" in msg


# --------------------------------------------------------------------------------- one atomic writer
def test_atomic_write_bytes_and_text(tmp_path):
    p = tmp_path / "out.bin"
    atomic.atomic_write(p, b"\x00\xff")
    assert p.read_bytes() == b"\x00\xff"
    atomic.atomic_write(p, "é")
    assert p.read_bytes() == "é".encode("utf-8")
    atomic.atomic_write(p, "a\udcffb", errors="backslashreplace")
    assert p.read_bytes() == b"a\\udcffb"
    atomic.atomic_write(p, b"unique", temp_prefix=".audit-tmp-", fsync=False)
    assert p.read_bytes() == b"unique" and sorted(x.name for x in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("temp_prefix", [None, ".audit-tmp-"])
def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch, temp_prefix):
    p = tmp_path / "out.txt"
    p.write_text("old")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        atomic.atomic_write(p, "new", temp_prefix=temp_prefix)
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]


def test_every_writer_goes_through_atomic_write(tmp_path):
    from audit_core.base import secrets
    from audit_core.copyright import reference
    from audit_core.data import cache
    from audit_core.run import attest, store

    for mod in (store, attest, reference, cache, secrets):
        assert vars(mod).get("atomic_write", atomic.atomic_write) is atomic.atomic_write
    renames = [name for name, src in core_sources() if re.search(r"\bos\.(replace|rename)\(", src)]
    assert renames == ["base/atomic.py"], renames
    assert audit_core.atomic_write is atomic.atomic_write and "atomic_write" in audit_core.__all__
    from audit_core import write_text

    write_text(tmp_path / "r.txt", "x")  # the public text writer still there (the html-report plugin uses it)
    assert (tmp_path / "r.txt").read_text() == "x"
