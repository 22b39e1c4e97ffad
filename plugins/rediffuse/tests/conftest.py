"""Fixtures for the audit-rediffuse tests (the fixture kit of audit_core.testing is loaded
automatically: toy_plugin, image_folder, write_config, audit_cli, register_plugin...)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# never touch the user's query cache, nor one left by an earlier test run (stale answers would
# hide a change in the maths): a fresh one per session, removed at exit
_QUERY_CACHE = tempfile.mkdtemp(prefix="audit-rediffuse-test-queries-")
os.environ["AUDIT_CACHE_DIR"] = _QUERY_CACHE
atexit.register(shutil.rmtree, _QUERY_CACHE, True)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)  # 2 shared cores: more threads only spin
