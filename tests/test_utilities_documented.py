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


# ---------------------------------------------------------------- documented signatures
# A call written in the docs as `name(a, b=1)` or `Class.method(a, b=1)` names parameters the
# callable has, with the defaults it has (the `_place(dtype="fp32")` drift of issue 29).
CALL = re.compile(r"`((?:[A-Z]\w*\.)?_?[a-z]\w*|[A-Z]\w*)\(([^`()]*)\)`")
CLASSES = ("Target", "Attack", "Batch", "Reporter", "Executor", "AttackContext", "AttackOutput")


def _resolve(name: str):
    import audit_core.testing as kit

    head, _, attr = name.partition(".")
    if attr:
        return getattr(getattr(audit_core, head, None), attr, None)
    if name in audit_core.__all__:
        return getattr(audit_core, name)
    for cls in CLASSES:
        found = getattr(getattr(audit_core, cls), name, None)
        if callable(found):
            return found
    found = getattr(kit, name, None) if name in dir(kit) or name in getattr(kit, "_KIT", ()) else None
    return None if "fixture" in type(found).__name__.lower() else found  # a fixture's signature is its requests


def _default(obj, params, key: str):
    import dataclasses
    import inspect

    default = params[key].default
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):  # a field(default_factory=...) shows as <factory>
        field = {f.name: f for f in dataclasses.fields(obj)}.get(key)
        if field is not None and field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
    return default if default is not inspect.Parameter.empty else _NONE


_NONE = object()


def signature_drift(text: str) -> list[str]:
    import ast
    import inspect

    bad = []
    for m in CALL.finditer(text):
        name, args = m.groups()
        obj = _resolve(name)
        if obj is None or not callable(obj):
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        params = sig.parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for arg in (a.strip() for a in args.split(",") if a.strip()):
            key, eq, value = (s.strip() for s in arg.partition("="))
            if not key.isidentifier():  # *args, an expression, a shape like [B]
                continue
            if key not in params:
                if not var_kw and eq and value != "...":  # `key=...`: a keyword an override may take
                    bad.append(f"`{name}({args})`: no parameter {key!r}")
                continue
            if eq:
                try:
                    documented = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    continue  # `...`, a name: not a literal to compare
                default = _default(obj, params, key)
                if default is _NONE:
                    continue  # a call written with a value (an example), not a default
                if default != documented:
                    bad.append(f"`{name}({args})`: {key} defaults to {default!r}, documented {documented!r}")
    return bad


def test_documented_signatures_match_the_code():
    root = Path(__file__).resolve().parents[1]
    pages = [*sorted((root / "docs").glob("*.md")), root / "README.md", *sorted(root.glob("plugins/*/README.md"))]
    bad = [f"{p.relative_to(root)}: {b}" for p in pages for b in signature_drift(p.read_text(encoding="utf-8"))]
    assert bad == []


def test_the_signature_check_sees_a_changed_default():
    assert signature_drift('`Target._place(dtype="fp32")`') == ["`Target._place(dtype=\"fp32\")`: dtype defaults to 'auto', documented 'fp32'"]
    assert signature_drift("`seed_grid(n, first_draw=0)`") == []
    assert signature_drift("`warn(message, louder=True)`") == ["`warn(message, louder=True)`: no parameter 'louder'"]
