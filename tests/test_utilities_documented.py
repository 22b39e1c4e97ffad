"""docs/writing-plugins.md's "Utilities" table names exactly ``audit_core.__all__`` (datasette's
``test_plugin_hooks_are_documented`` is the model): a public name added without a row, or a row
naming something that is not public, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import audit_core

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md"


def documented_names() -> set[str]:
    text = DOC.read_text(encoding="utf-8").split("## Utilities", 1)[1].split("\n\n", 2)[2]
    table = text.split("\n\n", 1)[0]
    names: set[str] = set()
    for line in table.splitlines()[2:]:
        first = line.split("|")[1]
        names |= {m.split("(")[0] for m in re.findall(r"`([A-Za-z_][\w]*)(?:\([^`]*\))?`", first)}
    return names


def test_utilities_table_matches_all():
    public = set(audit_core.__all__) - {"__version__"}
    doc = documented_names()
    assert not public - doc, f"public names without a row in docs/writing-plugins.md's Utilities: {sorted(public - doc)}"
    assert not doc - public, f"rows naming what is not in audit_core.__all__: {sorted(doc - public)}"


def test_the_check_sees_a_missing_row():
    assert "write_text" in documented_names() and "not_a_name" not in documented_names()
