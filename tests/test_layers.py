"""The core in layers (docs/architecture.md): the import-linter contracts hold, no import cycle
among audit_core's modules, and the old flat import paths still work (same module object, with a
DeprecationWarning naming the new path)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import grimp
import pytest

import audit_core
from audit_core import _compat

ROOT = Path(__file__).resolve().parents[1]
#: the package root and the public facade re-export every layer: above the layers, outside the check
FACADE = {"audit_core", "audit_core.api", "audit_core._compat"}


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every import cycle among ``modules`` (one path per strongly connected component > 1, or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan
        index[m] = low[m] = len(index)
        stack.append(m)
        on.add(m)
        for n in sorted(graph.find_modules_directly_imported_by(m) & modules):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = []
            while True:
                n = stack.pop()
                on.discard(n)
                comp.append(n)
                if n == m:
                    break
            if len(comp) > 1 or m in graph.find_modules_directly_imported_by(m):
                found.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_among_core_modules():
    graph = grimp.build_graph("audit_core")  # imports inside functions count too
    modules = graph.modules - FACADE
    assert len(modules) > 40
    assert _cycles(graph, modules) == []


def test_cycle_finder_finds_a_cycle():
    """The check above can fail: a graph with a -> b -> a has one cycle."""
    graph = grimp.ImportGraph()
    for m in ("p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, {"p.a", "p.b", "p.c"}) == [["p.a", "p.b"]]


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "lint-imports is missing: pip install -e '.[test]'"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_module_left_at_the_top_but_the_facade():
    top = sorted(p.name for p in (ROOT / "audit_core").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_compat.py", "api.py"]  # __main__: `python -m audit_core`
    for old in _compat.MOVED:
        assert not (ROOT / (old.replace(".", "/") + ".py")).exists(), old


@pytest.mark.parametrize("old", sorted(_compat.MOVED))
def test_old_import_path_is_the_same_module_with_a_warning(old):
    new = _compat.MOVED[old]
    sys.modules.pop(old, None)  # import it afresh through the alias (the real module stays loaded)
    with pytest.warns(DeprecationWarning, match=rf"^{old} moved to {new}$"):
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)
    assert mod.__name__ == new and mod.__spec__.name == new  # the module keeps its own identity


def test_monkeypatching_through_an_old_path_reaches_the_real_module(monkeypatch):
    from audit_core.run import runner

    sentinel = object()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        monkeypatch.setattr("audit_core.runner.write_text", sentinel)
    assert runner.write_text is sentinel


def test_old_from_import_and_factory_spelling_still_work():
    from audit_core.plugin import factory

    sys.modules.pop("audit_core.attacks", None)
    with pytest.warns(DeprecationWarning, match="audit_core.attacks moved to audit_core.plugin.attacks"):
        from audit_core.attacks import Attack
    assert Attack is audit_core.Attack
    from audit_core.plugin import manager

    with pytest.warns(DeprecationWarning, match="audit_core.plugins.build moved to audit_core.plugin.factory.build"):
        assert manager.build is factory.build


def test_public_api_does_not_warn():
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import audit_core, audit_core.api\n"
        "from audit_core import *\n"
        "from audit_core import ddim, seeding\n"
        "assert ddim.__name__ == 'audit_core.base.ddim'\n"
        "assert sorted(audit_core.api.__all__) == sorted(n for n in audit_core.__all__ if n != '__version__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_every_core_module_is_named_in_the_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    core = ROOT / "audit_core"
    missing = []
    for path in sorted(core.glob("*/*.py")):
        rel = path.relative_to(core).as_posix()
        if path.parent.name == "builtins":
            rel = "builtins/"
        elif path.name == "__init__.py" and path.stat().st_size < 600:  # a layer's docstring only
            continue
        elif path.name == "__main__.py":
            continue
        if f"`{rel}`" not in doc:
            missing.append(rel)
    assert missing == []


#: issue 29: no core module over this many lines (counted as `wc -l` counts them)
MAX_MODULE_LINES = 400


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def test_no_core_module_over_400_lines():
    core = ROOT / "audit_core"
    over = {
        p.relative_to(core).as_posix(): _lines(p)
        for p in sorted(core.rglob("*.py"))
        if _lines(p) > MAX_MODULE_LINES
    }
    assert over == {}, (
        f"split these into cohesive modules of at most {MAX_MODULE_LINES} lines (docs/architecture.md names each)"
    )


def test_the_line_count_is_wc_l(tmp_path):
    """The check above can fail: a file of 401 lines is over, one of 400 is not."""
    (tmp_path / "a.py").write_text("x = 1\n" * 401)
    (tmp_path / "b.py").write_text("x = 1\n" * 400)
    assert _lines(tmp_path / "a.py") > MAX_MODULE_LINES >= _lines(tmp_path / "b.py")
