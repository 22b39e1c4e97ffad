"""docs/contracts.md lists every contract a plugin must keep with the error a violation gets: each
error text occurs in the core (or, for pydantic's own text, is triggered here); its table of
kinds is kinds.py's. The example of subclassing a shipped target in docs/writing-plugins.md runs
through the public import path, and every distribution in examples/ is installed, tested and runs
an audit with each attack it registers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from audit_core.plugin import kinds

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "docs" / "contracts.md"
#: error texts that are pydantic's, not the core's: triggered by test_pydantic_strictness_text
PYDANTIC = {"Input should be a valid integer"}


def _rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]


def _errors(text: str) -> list[str]:
    """The ``error`` column's texts (in double backticks) of every contract row."""
    out = []
    for row in _rows(text):
        if row and row[-1] != "error":
            out += re.findall(r"``(.+?)``", row[-1])
    return out


def _core_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "audit_core").rglob("*.py")))


def test_every_listed_error_text_occurs_in_the_core():
    errors = _errors(CONTRACTS.read_text(encoding="utf-8"))
    assert len(errors) >= 40
    source = _core_source()
    missing = []
    for text in errors:
        if text in PYDANTIC:
            continue
        for part in (p.strip() for p in text.split("…")):
            if len(part) >= 3 and part not in source:
                missing.append((text, part))
    assert missing == []


def test_the_check_sees_an_error_text_the_core_never_writes():
    doc = CONTRACTS.read_text(encoding="utf-8") + "\n| made up | never | exit 2 | ``no such message anywhere in the core`` |\n"
    source = _core_source()
    assert any(text not in source for text in _errors(doc) if text not in PYDANTIC)


def test_pydantic_strictness_text():
    from audit_core import AttackParams
    from audit_core.base.errors import ConfigError
    from audit_core.plugin import factory

    class P(AttackParams):
        n: int = 1

    class A:
        name = "strict"
        Params = P

    with pytest.raises(ConfigError) as err:
        factory.validate(A, {"n": "2"})
    assert all(t in str(err.value) for t in PYDANTIC)


def test_the_kinds_table_of_the_page_is_kinds_py():
    text = CONTRACTS.read_text(encoding="utf-8")
    table = {row[0]: row for row in _rows(text) if row and row[0] in kinds.KINDS}
    assert list(table) == list(kinds.KINDS)
    for kind in kinds.TABLE:
        row = table[kind.plural]
        assert row[1] == f"`register_{kind.plural}`"
        if kind.base is None:
            assert row[3] == "a function" and row[4] == "—"
            continue
        assert row[3] == f"`audit_core.{kind.base_name}`"
        import audit_core

        assert getattr(audit_core, kind.base_name).__module__ + ":" + kind.base_name == kind.base  # the public name is the base
        for need in kind.needs:
            for method in need.methods:
                assert f"`{method}()`" in row[4], (kind.plural, method)
            if need.when:
                assert f"`{need.when.upper()}`" in row[4]


def test_the_pages_link_each_other():
    for doc in ("writing-plugins.md", "architecture.md"):
        assert "(contracts.md)" in (ROOT / "docs" / doc).read_text(encoding="utf-8"), doc


# ------------------------------------------------------------------ subclassing a shipped target


def _example(name: str) -> str:
    text = (ROOT / "docs" / "writing-plugins.md").read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        first, _, body = block.partition("\n")
        if first.strip() == f"# example: {name}":
            return body
    raise AssertionError(f"no example {name} in writing-plugins.md")


def test_the_public_import_of_the_ddim_target_is_torch_free_until_used():
    code = (
        "import sys, audit_ddim; assert 'torch' not in sys.modules; "
        "from audit_ddim import DDIMTarget, DDIMParams; import audit_ddim.target as t; "
        "assert DDIMTarget is t.DDIMTarget and DDIMParams is t.DDIMParams"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_documented_subclass_of_the_ddim_target_runs(register_plugin, tmp_path, monkeypatch):
    import torch

    from audit_core import hookimpl
    from audit_core.plugin import factory
    from audit_core.plugin.targets import TargetContext

    (tmp_path / "subclass_ddim.py").write_text(_example("subclass_ddim.py"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))

    class P:
        @hookimpl
        def register_targets(self, register):
            register("ddim-quantized", "subclass_ddim:QuantizedDDIM")

    register_plugin(P(), name="quantized")
    target = factory.build("targets", "ddim-quantized", {"model": "builtin:digits-ddpm", "levels": 3}, TargetContext(device="cpu"))
    x = torch.zeros(2, target.channels, target.image_size, target.image_size)
    v = target.variation(x, 10, 10, [[1], [2]], [None, None])
    assert v.shape == (2, 1, target.channels, target.image_size, target.image_size)
    assert set(torch.unique(v).tolist()) <= {-1.0, 0.0, 1.0}  # rounded to 3 levels
    assert target.stats.nfe == 2 and target.nfe_per_query(10, 10) == 1
    assert "levels=3" in target.identity()


# ------------------------------------------------------------------ every example runs


def _examples() -> list[Path]:
    return sorted(p for p in (ROOT / "examples").iterdir() if (p / "pyproject.toml").exists())


def test_there_are_examples():
    assert _examples()


@pytest.mark.parametrize("example", _examples(), ids=lambda p: p.name)
def test_every_example_is_installed_tested_and_runs(example, toy_run_config, audit_cli, tmp_path):
    project = tomllib.loads((example / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["audit"], example
    assert list((example / "tests").glob("test_*.py")), f"{example} has no tests (make test runs examples/*/tests)"
    code, out = audit_cli("plugins", "--json")
    listing = [p for p in json.loads(out[out.index("["):]) if p.get("distribution") == project["name"]]
    assert listing and not any(p.get("broken") or p.get("problems") for p in listing), listing
    attacks = [a for p in listing for a in p["registers"].get("attacks", [])]
    for attack in attacks:  # each attack it registers runs an audit on the toy target
        code, out = audit_cli("run", toy_run_config([{"plugin": attack}]), "--output", tmp_path / attack)
        assert code == 0, out
        results = json.loads((tmp_path / attack / "results.json").read_text())
        assert results["attacks"][attack]["n_members"] == 4
