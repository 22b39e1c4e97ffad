"""The plugin author's path (issue 34): the module entry point and the docs that describe it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_audit_core_is_the_audit_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "audit_core", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "python -m audit_core" in out.stdout and "report" in out.stdout and "run" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "audit_core", "report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not a finished run directory" in bad.stderr and "Traceback" not in bad.stderr


def test_the_docs_agree_on_what_a_failing_reporter_does():
    """writing-plugins.md and architecture.md once disagreed (exit 1 vs a warning)."""
    for doc in ("docs/writing-plugins.md", "docs/architecture.md"):
        flat = " ".join((ROOT / doc).read_text().replace("*", "").split())
        assert "reporter that raises fails" in flat and ("exit 1" in flat or "exit code 1" in flat), doc
        assert "--keep-going" in flat and "--param" in flat, doc
    flat = " ".join((ROOT / "docs/writing-plugins.md").read_text().split())
    assert "python -m audit_core" in flat and "floating-point" in flat and "[B, 1]" in flat


def test_the_docs_agree_on_clashes_qualified_names_and_required_methods():
    """Issue 34 items 3-5: both pages state the clash policy, the qualified names and the
    required-methods check the same way, and writing-plugins.md documents nfe_per_query and
    subclassing a shipped target by its public import."""
    for doc in ("docs/writing-plugins.md", "docs/architecture.md"):
        flat = " ".join((ROOT / doc).read_text().replace("*", "").split())
        assert "<distribution>:<name>" in flat and "built-in" in flat and "wins over a third-party plugin" in flat, doc
        assert "plugin/kinds.py" in flat and "contracts.md" in flat, doc
        assert "before any model loads" in flat or "before any model is loaded" in flat, doc
    flat = " ".join((ROOT / "docs/writing-plugins.md").read_text().split())
    assert "nfe_per_query(t, k)" in flat and "0, meaning unknown" in flat
    assert "from audit_ddim import DDIMTarget, DDIMParams" in flat
    assert "audit report RUN --reporter audit-evil:nfe-table" in flat


def test_a_param_for_a_plugin_without_params_says_it_takes_none(isolated_plugins, register_plugin):
    """A reporter (or any plugin) with no `Params`: `--param x=1` said only "unknown key"."""
    import pytest

    from audit_core import ConfigError, Reporter, build_plugin, hookimpl

    class Bare(Reporter):
        name = "bare-report"

        def render(self, run):
            return []

    class Plugin:
        @hookimpl
        def register_reporters(self, register):
            register(Bare)

    register_plugin(Plugin(), name="bare")
    with pytest.raises(ConfigError, match=r"x \(command line\): unknown key; reporter plugin 'bare-report' takes no params"):
        build_plugin("reporters", "bare-report", {"x": 1}, where="command line")
