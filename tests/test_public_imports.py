"""Shipped plugins (plugins/*/audit_*/ and examples/*/audit_*/, the installed packages) import from
the core only the public API, ``audit_core.__all__``: a name a plugin needs is made public (and
documented) rather than reached for inside a core module that may change. Tests may also use
``audit_core.testing``; the research scripts under plugins/*/scripts/ drive the runner and are not
plugin code."""

from __future__ import annotations

import ast
from pathlib import Path

import audit_core

ROOT = Path(__file__).resolve().parents[1]

#: (module, name) still reached past the API, each with its reason
ALLOWED: set[tuple[str, str]] = set()  # none: audit serve builds its target with the public build_plugin


def plugin_files() -> list[Path]:
    files = sorted(ROOT.glob("plugins/*/audit_*/**/*.py")) + sorted(ROOT.glob("examples/*/audit_*/**/*.py"))
    assert len(files) > 40  # the glob found the shipped plugins
    return files


def private_imports(path: Path) -> list[str]:
    """``module.name`` for every core name ``path`` imports that is not public."""
    public = set(audit_core.__all__)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "audit_core":
            for alias in node.names:
                if node.module == "audit_core" and alias.name in public:
                    continue
                if (node.module, alias.name) not in ALLOWED:
                    out.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("audit_core.")]
    return out


def test_shipped_plugins_import_only_public_core_names():
    bad = {str(p.relative_to(ROOT)): names for p in plugin_files() if (names := private_imports(p))}
    assert not bad, f"non-public audit_core names (add them to audit_core.__all__ or use a public one): {bad}"


def test_the_check_catches_a_private_import(tmp_path):
    p = tmp_path / "mod.py"
    p.write_text("from audit_core import Attack\nfrom audit_core.run.store import write_text\nimport audit_core.data\n")
    assert private_imports(p) == ["audit_core.run.store.write_text", "audit_core.data"]


def test_every_public_name_resolves():
    for name in audit_core.__all__:
        assert getattr(audit_core, name) is not None, name
