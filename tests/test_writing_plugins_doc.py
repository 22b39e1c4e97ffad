"""docs/writing-plugins.md is enough to write a plugin: its worked example (one plugin of every
kind) is copied out of the page as written, made a distribution on a temporary path (not
installed), listed by `audit plugins`, run, counted, and shown in the report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md"


def doc_files() -> dict[str, str]:
    """Every fenced block of the page whose first line is ``# file: PATH``."""
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        first, _, body = block.partition("\n")
        m = re.fullmatch(r"# file: (\S+)", first.strip())
        if m:
            files[m.group(1)] = body
    return files


@pytest.fixture(scope="module")
def my_plugins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("my-plugins")
    files = doc_files()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    eps = project["entry-points"]["audit"]
    info.joinpath("entry_points.txt").write_text("[audit]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return root


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "audit_core.cli", *args], capture_output=True, text=True, env=env, cwd=root, timeout=300)


def test_the_page_has_one_example_of_every_kind():
    files = doc_files()
    assert {"pyproject.toml", "audit.yaml", "audit_my_plugins/__init__.py", "tests/test_loss_trace.py"} <= set(files)
    hooks = re.findall(r"def (register_\w+)", files["audit_my_plugins/__init__.py"])
    assert sorted(hooks) == sorted(f"register_{k}" for k in ("attacks", "targets", "distances", "reporters", "executors", "datasets"))


def test_the_documented_plugins_are_listed(my_plugins):
    proc = run(my_plugins, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    mine = {p["name"]: p for p in json.loads(proc.stdout)}["my-plugins"]
    assert mine["distribution"] == "audit-my-plugins" and mine["version"] == "0.1.0"
    assert mine["registers"] == {
        "attacks": ["loss-trace"], "targets": ["closed-form"], "distances": ["linf"],
        "reporters": ["nfe-table"], "executors": ["reversed"], "datasets": ["stripes"],
    }
    assert "warning" not in proc.stderr


def test_the_documented_audit_runs_is_counted_and_reported(my_plugins):
    proc = run(my_plugins, "run", "audit.yaml", "--output", "out")
    assert proc.returncode == 0, proc.stderr
    assert "NFE per image" not in proc.stderr  # expected_nfe_per_image matches the core's count
    results = json.loads((my_plugins / "out" / "results.json").read_text())
    entry = results["attacks"]["loss-trace"]
    assert entry["nfe_per_image"] == 3 and entry["n_members"] == 12 and entry["plugin"] == "loss-trace"
    assert results["run"]["executor"]["plugin"] == "reversed"
    assert "loss-trace" in (my_plugins / "out" / "report.html").read_text()
    assert (my_plugins / "out" / "nfe.txt").read_text().startswith("loss-trace\tAUC ")
    assert "NFE/image 3" in (my_plugins / "out" / "nfe.txt").read_text()


def test_the_documented_unit_test_passes(my_plugins):
    env = {**os.environ, "PYTHONPATH": str(my_plugins)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_loss_trace.py"],
        capture_output=True, text=True, env=env, cwd=my_plugins, timeout=300,
    )
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
