import atexit
import os
import shutil
import tempfile

import pytest

from audit_core.testing import write_images

# A fresh query cache per test session, never one left by an earlier run (nor the user's own):
# stored variation answers from an older version of the code would hide a change in the maths.
# Set unconditionally (not setdefault) for the same reason; removed when the session ends.
_QUERY_CACHE = tempfile.mkdtemp(prefix="audit-test-queries-")
os.environ["AUDIT_CACHE_DIR"] = _QUERY_CACHE
atexit.register(shutil.rmtree, _QUERY_CACHE, True)


@pytest.fixture
def toy(toy_plugin, tmp_path, write_config):
    """A toy audit (6 + 6 8x8 images, the toy target, cache off): ``toy(**sections)`` -> an
    audit.yaml path, each section merged over the defaults; ``toy.members`` / ``toy.nonmembers``."""
    members = tmp_path / "members"
    nonmembers = tmp_path / "nonmembers"
    write_images(members, 6, seed=1)
    write_images(nonmembers, 6, seed=2)

    def make(name="audit.yaml", **over):
        cfg = {
            "run": {"name": "toy", "seed": 3, "device": "cpu", "batch_size": 2},
            "target": {"plugin": "toy"},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": [{"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 2}}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
        }
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return write_config(cfg, name)

    make.members, make.nonmembers = members, nonmembers
    return make
