"""One table of plugin kinds (audit_core/plugin/kinds.py): the four places that used to keep their
own table read it and cannot disagree; every class of a kind is checked for the methods its kind
requires (listed by `audit plugins`; a class registered by reference is checked on first use,
before any model loads); the distributions shipped with audit-core are named in one place."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from audit_core import hookimpl
from audit_core.base.errors import PluginError
from audit_core.plugin import factory, guard, hookspecs, kinds, lazyref, manager as plugins
from audit_core.testing import ToyTarget, no_traceback

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ one table


def test_the_old_tables_are_the_one_table():
    assert plugins.KINDS is kinds.KINDS and plugins.SINGULAR is kinds.SINGULAR
    assert lazyref.BASES is kinds.BASES
    hooks = {h.removeprefix("register_") for h in dir(hookspecs) if h.startswith("register_")} - {"commands"}
    assert set(kinds.KINDS) == hooks  # one register_<kind> hook per kind, and no other kind
    for kind in kinds.TABLE:
        if kind.base is None:
            assert kind.plural in ("distances", "datasets") and not kind.needs
            continue
        module, name = kind.base.split(":")
        base = getattr(importlib.import_module(module), name)
        assert kinds.BASES[kind.plural] == (module, name)
        assert guard._base_kind(base) == kind.singular  # Generator included (it was missing)
        assert factory._kind_of(base) == kind.plural
        assert kinds.kind_of(type("Sub", (base,), {})) is kind
        for need in kind.needs:
            assert all(callable(getattr(base, m, None)) for m in need.methods), (kind.plural, need)  # the base has them
    assert guard._base_kind(int) == "plugin" and factory._kind_of(int) == "plugins"


def test_the_table_imports_no_torch():
    code = "import sys, audit_core.plugin.kinds; assert 'torch' not in sys.modules and 'pydantic' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_builtin_distributions_are_the_plugins_folder():
    names = {tomllib.loads(p.read_text())["project"]["name"] for p in (ROOT / "plugins").glob("*/pyproject.toml")}
    assert len(names) >= 18
    assert kinds.BUILTIN_DISTRIBUTIONS == names | {"audit-core"}


# ------------------------------------------------------------------ required methods


def test_missing_methods_per_kind():
    from audit_core import Attack, Executor, Reporter
    from audit_core.plugin.generators import Generator
    from audit_core.plugin.targets import GRADIENTS, NOISE, VARIATION, Target

    assert kinds.missing_methods("attacks", type("A", (Attack,), {"name": "a"})) == ["score() (required of every attack)"]
    assert kinds.missing_methods("attacks", type("A", (Attack,), {"score": lambda self, b: None})) == []
    assert kinds.missing_methods("reporters", type("R", (Reporter,), {})) == ["render() (required of every reporter)"]
    assert kinds.missing_methods("executors", type("E", (Executor,), {})) == ["run() (required of every executor)"]
    assert kinds.missing_methods("generators", type("G", (Generator,), {})) == ["generate() (required of every generator)"]
    grey = type("T", (Target,), {"capabilities": frozenset({VARIATION, NOISE})})
    assert kinds.missing_methods("targets", grey) == ["eps() (required of a target with the capability 'noise')"]
    black = type("T", (Target,), {"capabilities": frozenset({VARIATION})})
    assert kinds.missing_methods("targets", black) == [
        "_variations() or _variation() or variation() (required of a target with the capability 'variation' but not 'noise')"
    ]
    white = type("T", (Target,), {"capabilities": frozenset({NOISE, GRADIENTS}), "eps": lambda self, z, t, c=None: z})
    assert kinds.missing_methods("targets", white) == ["grad_network() (required of a target with the capability 'gradients')"]
    assert kinds.missing_methods("targets", ToyTarget) == []  # a subclass of a complete class inherits its methods
    assert kinds.missing_methods("distances", "l2") == ["a callable (a distance is a function, not str)"]


def test_every_shipped_plugin_has_the_methods_its_kind_requires():
    checked = 0
    for kind in kinds.KINDS:
        reg = plugins.registry(kind)
        for name in reg:
            assert kinds.missing_methods(kind, reg[name]) == [], (kind, name)
            checked += 1
    assert checked > 30


ATTACK_NO_SCORE = '''
from audit_core import Attack

class NoScore(Attack):
    name = "no-score"
'''


class Counting(ToyTarget):
    """The toy target, counting how often it is built (the model load)."""

    name = "counting-toy"
    built: list[int] = []

    def __init__(self, params, context=None):
        Counting.built.append(1)
        super().__init__(params, context)


def _plugin(kind: str, *items):
    class P:
        pass

    def hook(self, register):
        for item in items:
            register(*item) if isinstance(item, tuple) else register(item)

    hook.__name__ = f"register_{kind}"
    setattr(P, hook.__name__, hookimpl(hook))
    return P()


@pytest.fixture
def counting(register_plugin):
    Counting.built.clear()
    register_plugin(_plugin("targets", Counting), name="counting")
    return Counting


def test_an_eager_attack_without_score_is_a_listed_problem_and_refused(isolated_plugins, register_plugin, monkeypatch, audit_cli):
    from audit_core import Attack

    NoScore = type("NoScore", (Attack,), {"name": "eager-no-score", "__module__": "audit_noscore"})
    monkeypatch.setitem(plugins._dist_of, "noscore", ("audit-noscore", "0.2.0"))
    register_plugin(_plugin("attacks", NoScore), name="noscore")
    mine = {p["name"]: p for p in plugins.get_plugins()}["noscore"]
    assert mine["problems"] == ["attack 'eager-no-score' (audit_noscore.NoScore) does not implement score() (required of every attack)"]
    code, out = audit_cli("plugins")
    assert code == 0 and "problem: noscore: attack 'eager-no-score'" in " ".join(out.split())
    code, out = audit_cli("plugins", "--json")
    assert json.loads(out[out.index("["):])[0]["problems"] == mine["problems"]
    with pytest.raises(PluginError, match=r"attack plugin 'eager-no-score' \(class audit_noscore.NoScore, from audit-noscore 0.2.0\) "
                       r"cannot be used: it does not implement score\(\) \(required of every attack\)"):
        factory.lookup("attacks", "eager-no-score")


def test_a_lazy_attack_without_score_is_listed_unimported_and_refused_before_the_model_loads(
    isolated_plugins, counting, register_plugin, monkeypatch, tmp_path, image_folder, write_config, audit_cli
):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "h1_lazy_noscore.py").write_text(ATTACK_NO_SCORE)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setitem(plugins._dist_of, "lazy-noscore", ("audit-lazy-noscore", "0.3.0"))
    register_plugin(_plugin("attacks", ("no-score", "h1_lazy_noscore:NoScore")), name="lazy-noscore")
    code, out = audit_cli("plugins", "--json")
    listing = {p["name"]: p for p in json.loads(out[out.index("["):])}
    assert listing["lazy-noscore"]["registers"] == {"attacks": ["no-score"]} and "problems" not in listing["lazy-noscore"]
    assert "h1_lazy_noscore" not in sys.modules  # `audit plugins` did not import it
    cfg = write_config({
        "run": {"name": "x", "device": "cpu"},
        "target": {"plugin": "counting-toy"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "no-score"}],
        "cache": {"enabled": False},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "out")
    text = " ".join(out.split())
    assert code == 2 and no_traceback(out), out
    assert "attack plugin 'no-score' cannot be used: plugin 'lazy-noscore' (audit-lazy-noscore 0.3.0) is broken" in text
    assert "which does not implement score() (required of every attack)" in text
    assert Counting.built == []  # refused before the target (the model) was built
