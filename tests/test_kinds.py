"""One table of plugin kinds (audit_core/plugin/kinds.py): the four places that used to keep their
own table read it and cannot disagree; every class of a kind is checked for the methods its kind
requires (listed by `audit plugins`; a class registered by reference is checked on first use,
before any model loads); the distributions shipped with audit-core are named in one place."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from audit_core import hookimpl
from audit_core.base.errors import PluginError
from audit_core.plugin import factory, guard, hookspecs, kinds, lazyref, manager as plugins
from audit_core.testing import ToyTarget, no_traceback, plugin_of

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
        "_variations() or _variation() or variation() or eps() (required of a target with the capability 'variation' but not 'noise')"
    ]
    from audit_core.testing import VariationOnlyTarget

    assert kinds.missing_methods("targets", VariationOnlyTarget) == []  # variations from its eps, by the base class
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


_plugin = plugin_of  # the fixture kit's in-memory plugin


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


# ------------------------------------------------------------------ clashes and qualified names

import torch  # noqa: E402

from audit_core import Attack, AttackOutput, AttackParams, Reporter, flat_sum  # noqa: E402


class DistParams(AttackParams):
    distance: str = "l2"


class DistAttack(Attack):
    """Scores minus the distance between each image and a zero image, by the named distance."""

    name = "dist-attack"
    Params = DistParams

    def check(self):
        self.dist = self.distance(self.params.distance)

    def score(self, batch):
        x = batch.images
        return AttackOutput(scores=-self.dist(x, torch.zeros_like(x)).float())


class TextReporter(Reporter):
    name = "txt"

    def render(self, run):
        path = run.dir / "h1.txt"
        path.write_text(",".join(sorted(run.results["attacks"])), encoding="utf-8")
        return [path]


calls: list[str] = []


def evil_l2(a, b):
    calls.append("evil-l2")
    return flat_sum((a - b) ** 2)


def _fake_dist(monkeypatch, plugin_name: str, dist: str, version: str = "1.0.0") -> None:
    monkeypatch.setitem(plugins._dist_of, plugin_name, (dist, version))


def _two(kind_items: dict) -> object:
    """One in-memory plugin implementing several register_<kind> hooks."""

    class P:
        pass

    for kind, items in kind_items.items():
        def hook(self, register, _items=items):
            for item in _items:
                register(*item) if isinstance(item, tuple) else register(item)

        hook.__name__ = f"register_{kind}"
        setattr(P, hook.__name__, hookimpl(hook))
    return P()


def test_a_builtin_name_wins_over_a_third_party_one(monkeypatch, capsys, audit_cli):
    class EvilRediffuse(DistAttack):
        name = "rediffuse"

    with plugins.isolated(keep=("rediffuse",)):
        _fake_dist(monkeypatch, "evil", "audit-evil-h1", "6.6.6")
        from audit_core.testing import registered

        with registered(_two({"attacks": [EvilRediffuse], "distances": [("l2", evil_l2)]}), name="evil"):
            capsys.readouterr()
            assert plugins.registry("attacks")["rediffuse"].__module__.startswith("audit_rediffuse")
            assert plugins.registry("distances")["l2"] is not evil_l2
            err = " ".join(capsys.readouterr().err.split())
            assert err.count("warning:") == 2, err  # one per name
            assert (
                "warning: attack 'rediffuse' is registered by the built-in 'rediffuse' (audit-rediffuse 0.1.0) and by "
                "'evil' (audit-evil-h1 6.6.6); the built-in one is used. To use the other, write its qualified name "
                "'audit-evil-h1:rediffuse' where the name goes in audit.yaml." in err
            )
            assert "distance 'l2' is registered by the built-in 'audit-core' (0.1.0) and by 'evil'" in err
            assert factory.lookup("attacks", "audit-evil-h1:rediffuse") is EvilRediffuse
            assert factory.lookup("attacks", "audit-rediffuse:rediffuse") is plugins.registry("attacks")["rediffuse"]
            assert plugins.registry("distances")["audit-evil-h1:l2"] is evil_l2
            assert "audit-core:l2" in plugins.registry("distances") and "audit-evil-h1:l2" in plugins.registry("distances")
            assert plugins.shadowed("attacks") == {"rediffuse": ["evil"]} and plugins.clashes("attacks") == {}
            mine = {p["name"]: p for p in plugins.get_plugins()}["evil"]
            assert mine["registers"] == {"attacks": ["rediffuse"], "distances": ["l2"]}
            assert mine["qualified"] == ["audit-evil-h1:rediffuse", "audit-evil-h1:l2"]
            assert mine["shadowed"][0] == "attack 'rediffuse' is the built-in one of 'rediffuse' (audit-rediffuse 0.1.0); this one is disabled for that name"
            code, out = audit_cli("plugins")
            text = " ".join(out.split())
            assert code == 0 and "built-in wins: evil: attack 'rediffuse' is the built-in one" in text
            # each line names the qualified name of its own clash, not every name the plugin shadows
            assert "attack 'rediffuse' is the built-in one of 'rediffuse' (audit-rediffuse 0.1.0); this one is disabled for that name; use it as 'audit-evil-h1:rediffuse' built-in wins" in text
            assert "this one is disabled for that name; use it as 'audit-evil-h1:l2'" in text
            assert "'audit-evil-h1:rediffuse' or 'audit-evil-h1:l2'" not in text
            assert re.search(r"built-in\s+│\s+audit-core", out) and "ssim" in out and "inprocess" in out  # the core's distances are listed


def _twins(monkeypatch) -> tuple[type, type]:
    """Two attack classes registering one name, of the distributions audit-twin-x and audit-twin-y
    (register them as the plugins twin-x and twin-y)."""
    class A(DistAttack):
        name = "h1-twin"

    class B(DistAttack):
        name = "h1-twin"

    _fake_dist(monkeypatch, "twin-x", "audit-twin-x")
    _fake_dist(monkeypatch, "twin-y", "audit-twin-y")
    return A, B


def test_two_third_party_plugins_are_used_by_neither_name_but_each_qualified(isolated_plugins, register_plugin, monkeypatch, capsys):
    A, B = _twins(monkeypatch)
    register_plugin(_plugin("attacks", A), name="twin-x")
    register_plugin(_plugin("attacks", B), name="twin-y")
    assert "h1-twin" not in plugins.registry("attacks") and plugins.clashes("attacks") == {"h1-twin": ["twin-x", "twin-y"]}
    err = " ".join(capsys.readouterr().err.split())
    assert "neither is used. Uninstall one, or load one with AUDIT_LOAD_PLUGINS. Or pick one by its qualified name: 'audit-twin-x:h1-twin' or 'audit-twin-y:h1-twin'." in err
    with pytest.raises(PluginError, match="so neither is used.*write the qualified name of the one you mean: 'audit-twin-x:h1-twin' or 'audit-twin-y:h1-twin'"):
        factory.lookup("attacks", "h1-twin")
    assert factory.lookup("attacks", "audit-twin-x:h1-twin") is A and factory.lookup("attacks", "audit-twin-y:h1-twin") is B
    with pytest.raises(PluginError, match=r"unknown attack plugin 'audit-twin-z:h1-twin'. Did you mean 'audit-twin-.:h1-twin'\?"):
        factory.lookup("attacks", "audit-twin-z:h1-twin")
    listing = {p["name"]: p for p in plugins.get_plugins()}
    assert listing["twin-x"]["clashes"] == ["attack 'h1-twin' also registered by twin-y"]
    assert listing["twin-x"]["qualified"] == ["audit-twin-x:h1-twin"]
    assert listing["twin-x"]["picks"] == {"attack 'h1-twin'": ["audit-twin-x:h1-twin", "audit-twin-y:h1-twin"]}


def test_each_clash_line_names_the_qualified_names_of_that_clash(isolated_plugins, register_plugin, monkeypatch, audit_cli):
    """A plugin that both clashes with another third-party plugin and shadows a built-in distance: the
    `name clash:` line offers both plugins' qualified names for that name, and nothing else."""
    A, B = _twins(monkeypatch)
    register_plugin(_two({"attacks": [A], "distances": [("l2", evil_l2)]}), name="twin-x")
    register_plugin(_plugin("attacks", B), name="twin-y")
    code, out = audit_cli("plugins")
    text = " ".join(out.split())
    assert code == 0, out
    assert (
        "name clash: twin-x: attack 'h1-twin' also registered by twin-y (neither is used); pick one by its qualified "
        "name: 'audit-twin-x:h1-twin' or 'audit-twin-y:h1-twin' built-in wins:" in text
    )
    assert "this one is disabled for that name; use it as 'audit-twin-x:l2' name clash: twin-y" in text
    assert "name clash: twin-y: attack 'h1-twin' also registered by twin-x (neither is used); pick one by its qualified name: 'audit-twin-x:h1-twin' or 'audit-twin-y:h1-twin'" in text


def test_qualified_names_work_wherever_a_plugin_name_is_written(
    isolated_plugins, toy_plugin, register_plugin, monkeypatch, image_folder, write_config, audit_cli, tmp_path
):
    _fake_dist(monkeypatch, "evil2", "audit-evil2")
    register_plugin(_two({"attacks": [DistAttack], "distances": [("l2", evil_l2)], "reporters": [TextReporter]}), name="evil2")
    calls.clear()
    cfg = write_config({
        "run": {"name": "q", "device": "cpu", "executor": {"plugin": "audit-core:inprocess"}},
        "target": {"plugin": "toy-targets:toy"},  # an in-process plugin is qualified by its plugin name
        "data": {"members": str(image_folder("m", n=3)), "nonmembers": str(image_folder("n", n=3))},
        "attacks": [{"plugin": "audit-evil2:dist-attack", "name": "d", "params": {"distance": "audit-evil2:l2"}}],
        "reports": [{"plugin": "audit-evil2:txt"}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "out")
    assert code == 0, out
    assert calls and (tmp_path / "out" / "h1.txt").read_text() == "d"
    (tmp_path / "out" / "h1.txt").unlink()
    code, out = audit_cli("report", tmp_path / "out", "--reporter", "audit-evil2:txt")
    assert code == 0, out
    assert (tmp_path / "out" / "h1.txt").read_text() == "d"


@pytest.mark.parametrize("distance", ["cosine", "h1-dct", "audit-nope:l2", "nodist:l2"])
def test_a_bad_distance_name_exits_2_before_the_model_loads(
    distance, isolated_plugins, counting, register_plugin, monkeypatch, image_folder, write_config, audit_cli, tmp_path
):
    _fake_dist(monkeypatch, "dct-a", "audit-dct-a")
    _fake_dist(monkeypatch, "dct-b", "audit-dct-b")
    register_plugin(_plugin("distances", ("h1-dct", evil_l2)), name="dct-a")
    register_plugin(_plugin("distances", ("h1-dct", evil_l2.__call__)), name="dct-b")
    register_plugin(_plugin("attacks", DistAttack), name="dist")
    cfg = write_config({
        "run": {"name": "x", "device": "cpu"},
        "target": {"plugin": "counting-toy"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "dist-attack", "params": {"distance": distance}}],
        "cache": {"enabled": False},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "out")
    text = " ".join(out.split()).replace(str(tmp_path) + "/", "")
    assert code == 2 and no_traceback(out), out
    assert "attacks[0].params.distance (audit.yaml, line" in text
    if distance == "h1-dct":
        assert "distance plugin 'h1-dct' is registered twice" in text and "'audit-dct-a:h1-dct' or 'audit-dct-b:h1-dct'" in text
    else:
        assert f"unknown distance '{distance}'." in text
    if distance == "nodist:l2":  # a wrong qualifier: the qualified names that name exists under
        assert "Did you mean 'audit-core:l2'?" in text, text
    assert Counting.built == [] and not (tmp_path / "out").exists()


def test_a_dataset_name_is_worded_like_any_plugin_name_and_may_be_qualified(
    isolated_plugins, counting, register_plugin, monkeypatch, image_folder, write_config, audit_cli, tmp_path
):
    """Two third-party datasets named alike: neither by the bare name (exit 2 naming both
    qualified names, before the model loads); each by its qualified name."""
    from audit_core import ImageRecord

    folder = image_folder("m", n=2)

    def loader(tag):
        def load(subset, opts):
            return [ImageRecord(id=f"{tag}-{subset}-{p.stem}", path=str(p)) for p in sorted(folder.iterdir())]
        return load

    _fake_dist(monkeypatch, "ds-a", "audit-ds-a")
    _fake_dist(monkeypatch, "ds-b", "audit-ds-b")
    register_plugin(_plugin("datasets", ("h1-set", loader("a"))), name="ds-a")
    register_plugin(_plugin("datasets", ("h1-set", loader("b"))), name="ds-b")
    register_plugin(_plugin("attacks", DistAttack), name="dist")
    spec = {
        "run": {"name": "x", "device": "cpu"},
        "target": {"plugin": "counting-toy"},
        "data": {"members": "builtin:h1-set/m", "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "dist-attack"}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    }
    code, out = audit_cli("run", write_config(spec), "--output", tmp_path / "out")
    text = " ".join(out.split())
    assert code == 2 and no_traceback(out), out
    assert "data.members: dataset plugin 'h1-set' is registered twice" in text and "'audit-ds-a:h1-set' or 'audit-ds-b:h1-set'" in text
    assert Counting.built == [] and not (tmp_path / "out").exists()
    spec["data"]["members"] = "builtin:audit-ds-b:h1-set/m"
    code, out = audit_cli("run", write_config(spec), "--output", tmp_path / "out")
    assert code == 0, out
    ids = (tmp_path / "out" / "scores.csv").read_text()
    assert "b-m-" in ids and "a-m-" not in ids


def _scores(run_dir: Path) -> list[tuple[str, str]]:
    rows = (run_dir / "scores.csv").read_text().splitlines()[1:]
    return [(r.split(",")[1], r.split(",")[-1]) for r in rows]


@pytest.mark.parametrize("params", [{"t": 100, "k": 50, "n": 2}, {"t": 100, "k": 50, "n": [1, 2]}])
def test_qualifying_an_attack_name_keeps_its_draws_and_scores(params, toy_run_config, audit_cli, tmp_path):
    """Writing `<distribution>:<name>` (as a clash asks) picks the same plugin with the same
    per-image seeds: the scores equal the bare name's, a sweep's included."""
    bare = toy_run_config([{"plugin": "variation-similarity", "params": params}], target="toy-variation")
    code, out = audit_cli("run", bare, "--output", tmp_path / "bare")
    assert code == 0, out
    qualified = toy_run_config(
        [{"plugin": "audit-example-attack:variation-similarity", "params": params}], target="toy-variation"
    )
    code, out = audit_cli("run", qualified, "--output", tmp_path / "qualified")
    assert code == 0, out
    assert _scores(tmp_path / "bare") == _scores(tmp_path / "qualified")
