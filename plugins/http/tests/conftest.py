"""Fixtures for the audit-http tests (the fixture kit of audit_core.testing is loaded
automatically: image_folder, write_config, audit_cli, register_plugin...)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

pytest.importorskip("fastapi", reason="the audit-http tests need the `serve` extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="the audit-http tests need the `serve` extra (fastapi, uvicorn)")

# never touch the user's query cache from tests
os.environ.setdefault("AUDIT_CACHE_DIR", os.path.join(tempfile.gettempdir(), "audit-http-test-queries"))


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
