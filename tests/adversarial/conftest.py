"""Shared pieces of the adversarial corpus: ``refused`` (exit 2, one paragraph, no traceback, no
run directory). The toy audit ``toy`` is in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_core.base import secrets
from audit_core.testing import no_traceback


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    secrets.forget_all()


def refused(audit_cli, out: Path, *args) -> str:
    """Run, expect exit 2 without traceback and without a run directory; return the output
    with rich's line wrapping undone."""
    code, output = audit_cli("run", *args, "--output", out)
    assert code == 2, output
    assert no_traceback(output), output
    assert "Error:" in output
    assert not out.exists(), f"{out} was created for an input error"
    return " ".join(output.split())


@pytest.fixture
def refuse(audit_cli, tmp_path):
    return lambda *args: refused(audit_cli, tmp_path / "out", *args)


@pytest.fixture
def toy_slow(register_plugin):
    """The toy-slow target of tests/plugins/audit-toy (it reads `token_env`), registered unless
    it is installed."""
    from audit_core.plugin import manager as plugins

    if "toy-slow" not in plugins.registry("targets"):
        import importlib.util

        init = Path(__file__).parent.parent / "plugins" / "audit-toy" / "audit_toy" / "__init__.py"
        spec = importlib.util.spec_from_file_location("audit_toy_inline", init)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        register_plugin(mod, name="audit-toy-inline")
