"""Shared pieces of the adversarial corpus: a toy audit (6 + 6 8x8 images, the toy target, cache
off) and ``refused`` (exit 2, one paragraph, no traceback, no run directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_core import secrets
from audit_core.testing import no_traceback, write_images


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    secrets.forget_all()


@pytest.fixture
def toy(toy_plugin, tmp_path, write_config):
    """``toy(**sections)`` -> an audit.yaml path; ``toy.members`` / ``toy.nonmembers`` folders."""
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
    from audit_core import plugins

    if "toy-slow" not in plugins.registry("targets"):
        import importlib.util

        init = Path(__file__).parent.parent / "plugins" / "audit-toy" / "audit_toy" / "__init__.py"
        spec = importlib.util.spec_from_file_location("audit_toy_inline", init)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        register_plugin(mod, name="audit-toy-inline")
