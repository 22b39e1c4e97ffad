"""Fixtures for the audit-rediffuse tests (the fixture kit of audit_core.testing is loaded
automatically: toy_plugin, image_folder, write_config, audit_cli, register_plugin...)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# never touch the user's query cache from tests
os.environ.setdefault("AUDIT_CACHE_DIR", os.path.join(tempfile.gettempdir(), "audit-rediffuse-test-queries"))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)  # 2 shared cores: more threads only spin
