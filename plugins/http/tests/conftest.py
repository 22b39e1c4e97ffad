"""Fixtures for the audit-http tests (the fixture kit of audit_core.testing is loaded
automatically: image_folder, write_config, audit_cli, register_plugin...)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

pytest.importorskip("fastapi", reason="the audit-http tests need the `serve` extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="the audit-http tests need the `serve` extra (fastapi, uvicorn)")

# never touch the user's query cache, nor one left by an earlier test run (stale answers would
# hide a change in the maths): a fresh one per session, removed at exit
_QUERY_CACHE = tempfile.mkdtemp(prefix="audit-http-test-queries-")
os.environ["AUDIT_CACHE_DIR"] = _QUERY_CACHE
atexit.register(shutil.rmtree, _QUERY_CACHE, True)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)  # 2 shared cores: more threads only spin


@pytest.fixture
def served():
    """``served(app) -> url``: the app on a loopback port until the test ends."""
    from audit_http.testing import LoopbackServer

    servers = []

    def _serve(app):
        s = LoopbackServer(app)
        url = s.__enter__()
        servers.append(s)
        return url

    yield _serve
    for s in reversed(servers):
        s.__exit__(None, None, None)
