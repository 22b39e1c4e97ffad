"""Lazy registration: ``register(name, "module:attr")`` lists the name without importing the
module, imports it on first use (lookup, build, a registry read), and a reference that is
malformed, missing, fails to import or points at the wrong kind disables its plugin with one
clear message naming it (in-process here; through `audit plugins` and `audit run` at the end).
Registering the class itself (the eager API) keeps working unchanged."""

from __future__ import annotations

import json
import pickle
import sys
import textwrap

import pytest

from audit_core import hookimpl
from audit_core.plugin import factory, manager as plugins
from audit_core.base.errors import PluginError
from audit_core.testing import no_traceback, registered

from .test_plugin_boundary import cli, make_dist

GOOD = '''
from audit_core.plugin.attacks import Attack, AttackOutput

class Lazy(Attack):
    name = "lazy-attack"

    def score(self, batch):
        return AttackOutput(scores=batch.images.flatten(1).mean(1))

def not_a_class():
    pass

class Unnamed(Attack):
    name = "something-else"

def distance(a, b):
    return ((a - b) ** 2).flatten(1).sum(1)

NUMBER = 3
'''
TARGET = '''
from audit_core.plugin.targets import Target

class T(Target):
    name = "lazy-attack"
'''
FAILS = "import audit_no_such_dependency  # not installed\n"


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Importable modules ``lazy_good``, ``lazy_target`` and ``lazy_fails`` on a temporary path,
    none imported yet (and none left in sys.modules afterwards)."""
    for name, text in {"lazy_good": GOOD, "lazy_target": TARGET, "lazy_fails": FAILS}.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("lazy_good", "lazy_target", "lazy_fails"):
        sys.modules.pop(name, None)


def plugin(kind: str = "attacks", **refs: str):
    """An in-memory plugin whose ``register_<kind>`` registers each name -> reference."""

    class P:
        pass

    def hook(self, register):
        for name, ref in refs.items():
            register(name.replace("_", "-"), ref)

    hook.__name__ = f"register_{kind}"
    setattr(P, f"register_{kind}", hookimpl(hook))
    return P()


@pytest.fixture
def isolated():
    with plugins.isolated():
        yield


def test_a_reference_is_listed_without_import_and_loaded_on_first_use(modules, isolated):
    with registered(plugin(lazy_attack="lazy_good:Lazy"), name="lazy-plugin"):
        listing = {p["name"]: p for p in plugins.get_plugins()}
        assert listing["lazy-plugin"]["registers"] == {"attacks": ["lazy-attack"]}
        view = plugins.registry("attacks")
        assert "lazy-attack" in view and "lazy-attack" in list(view) and len(view) == 1
        assert "lazy_good" not in sys.modules  # listed, membership-tested, not imported

        cls = factory.lookup("attacks", "lazy-attack")
        assert "lazy_good" in sys.modules and cls is sys.modules["lazy_good"].Lazy
        assert cls.plugin_name == "lazy-plugin"  # as an eagerly registered class gets it
        assert plugins.registry("attacks")["lazy-attack"] is cls
        assert factory.validate(cls, {}).__class__ is cls.Params
        assert pickle.loads(pickle.dumps(plugins.registry("attacks"))) == {"lazy-attack": cls}


def test_function_kinds_take_references_too(modules, isolated):
    with registered(plugin("distances", lazy_l2="lazy_good:distance"), name="lazy-distances"):
        assert "lazy_good" not in sys.modules
        fn = plugins.registry("distances")["lazy-l2"]
        assert fn is sys.modules["lazy_good"].distance
        assert "l2" in plugins.registry("distances")  # the built-ins are still there


def test_eager_and_lazy_registrations_mix(modules, isolated):
    from audit_core.plugin.attacks import Attack

    class Eager(Attack):
        name = "eager-attack"

        def score(self, batch):  # required of every attack (kinds.py): looked up below
            raise AssertionError("not called")

    class P:
        @hookimpl
        def register_attacks(self, register):
            register(Eager)
            register("lazy-attack", "lazy_good:Lazy")

    with registered(P(), name="mixed"):
        assert factory.lookup("attacks", "eager-attack") is Eager and Eager.plugin_name == "mixed"
        assert factory.lookup("attacks", "lazy-attack").__module__ == "lazy_good"


@pytest.mark.parametrize(
    "ref, reason",
    [
        ("no_such_pkg.attack:Lazy", "its attack 'lazy-attack' points at no_such_pkg.attack:Lazy, whose package cannot be "
         "imported (ModuleNotFoundError: No module named 'no_such_pkg')"),
        ("lazy_nowhere:Lazy", "its attack 'lazy-attack' points at lazy_nowhere:Lazy, but there is no module 'lazy_nowhere'"),
        ("lazy_good.Lazy", "its attack 'lazy-attack' is registered as 'lazy_good.Lazy', which is not a reference of the "
         "form 'package.module:Name'"),
    ],
)
def test_a_missing_module_or_malformed_reference_disables_the_plugin_when_listed(modules, isolated, ref, reason):
    with registered(plugin(lazy_attack=ref), name="lazy-plugin"):
        listing = {p["name"]: p for p in plugins.get_plugins()}
        assert listing["lazy-plugin"]["broken"] == reason
        with pytest.raises(PluginError) as err:
            factory.lookup("attacks", "lazy-attack")
        assert f"Disabled because they are broken (one may provide 'lazy-attack'): lazy-plugin ({reason})" in str(err.value)


@pytest.mark.parametrize(
    "ref, reason",
    [
        ("lazy_fails:Lazy", "its attack 'lazy-attack' points at lazy_fails:Lazy, which cannot be imported "
         "(ModuleNotFoundError: No module named 'audit_no_such_dependency')"),
        ("lazy_good:Missing", "its attack 'lazy-attack' points at lazy_good:Missing, which cannot be loaded "
         "(lazy_good has no attribute 'Missing')"),
        ("lazy_target:T", "its attack 'lazy-attack' points at lazy_target:T, which is the class lazy_target.T, not a "
         "subclass of audit_core.plugin.attacks.Attack"),
        ("lazy_good:not_a_class", "its attack 'lazy-attack' points at lazy_good:not_a_class, which is a function, not a "
         "subclass of audit_core.plugin.attacks.Attack"),
        ("lazy_good:Unnamed", "its attack 'lazy-attack' points at lazy_good:Unnamed, whose name is 'something-else': "
         "register it under that name, or set `name = 'lazy-attack'` on the class"),
    ],
)
def test_a_reference_that_fails_on_use_is_that_plugins_failure(modules, isolated, ref, reason):
    with registered(plugin(lazy_attack=ref), name="lazy-plugin"):
        assert "lazy-attack" in plugins.registry("attacks")  # listed: nothing imported yet
        with pytest.raises(PluginError) as err:
            factory.lookup("attacks", "lazy-attack", where="attacks[0].plugin (audit.yaml, line 9)")
        assert str(err.value) == (
            f"attacks[0].plugin (audit.yaml, line 9): attack plugin 'lazy-attack' cannot be used: plugin 'lazy-plugin' "
            f"is broken: {reason}. Other plugins keep working; see `audit plugins`."
        )
        # the plugin is disabled as if its hook had failed: listed as broken, the name gone
        assert [(b.name, b.reason) for b in plugins.broken()] == [("lazy-plugin", reason)]
        assert "lazy-attack" not in plugins.registry("attacks")


def test_a_bad_function_reference_fails_on_use(modules, isolated):
    with registered(plugin("distances", lazy_l2="lazy_good:NUMBER"), name="lazy-distances"):
        with pytest.raises(PluginError, match="its distance 'lazy-l2' points at lazy_good:NUMBER, which is an int, not a function"):
            plugins.registry("distances")["lazy-l2"]


# ------------------------------------------------------------------ installed, through the CLI

LAZY_PLUGIN = '''
from audit_core import hookimpl

@hookimpl
def register_attacks(register):
    register("lazy-good", "audit_lazy.attack:Good")
    register("lazy-importfail", "audit_lazy.fails:Good")
'''
LAZY_ATTACK = '''
import torch
from audit_core import Attack, AttackOutput, NOISE, flat_sum

class Good(Attack):
    name = "lazy-good"
    requires = frozenset({NOISE})
    expected_nfe_per_image = 1

    def score(self, batch):
        x = batch.images
        return AttackOutput(scores=-flat_sum((self.target.eps(x, 100, batch.captions) - x) ** 2))
'''
TYPO_PLUGIN = '''
from audit_core import hookimpl

@hookimpl
def register_attacks(register):
    register("lazy-typo", "audit_lazy_typo.atack:Typo")  # misspelled module
'''


@pytest.fixture(scope="module")
def lazy_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_dist(root, "audit-lazy", "0.4.0", {"lazy": "audit_lazy.plugin"}, {
        "audit_lazy/__init__.py": "", "audit_lazy/plugin.py": LAZY_PLUGIN, "audit_lazy/attack.py": LAZY_ATTACK,
        "audit_lazy/fails.py": FAILS,
    })
    make_dist(root, "audit-lazy-typo", "0.5.0", {"lazy-typo": "audit_lazy_typo"}, {"audit_lazy_typo/__init__.py": TYPO_PLUGIN})
    return root


def test_audit_plugins_lists_references_and_flags_a_missing_module(lazy_env):
    proc = cli("plugins", "--json", pythonpath=lazy_env)
    assert proc.returncode == 0, proc.stderr
    data = {p["name"]: p for p in json.loads(proc.stdout)}
    assert data["lazy"]["registers"] == {"attacks": ["lazy-good", "lazy-importfail"]}
    assert data["lazy-typo"]["broken"] == (
        "its attack 'lazy-typo' points at audit_lazy_typo.atack:Typo, but there is no module 'audit_lazy_typo.atack'"
    )
    assert "warning: plugin 'lazy-typo' (distribution audit-lazy-typo 0.5.0) is disabled: its attack 'lazy-typo'" in " ".join(
        proc.stderr.split()
    )


def _config(tmp_path, attack: str):
    from audit_core.testing import write_images

    write_images(tmp_path / "m", 2, seed=1)
    write_images(tmp_path / "n", 2, seed=2)
    p = tmp_path / f"{attack}.yaml"
    p.write_text(
        "run: {name: x, device: cpu, batch_size: 2}\ntarget: {plugin: toy-slow}\n"
        f"data: {{members: {tmp_path / 'm'}, nonmembers: {tmp_path / 'n'}}}\n"
        f"attacks: [{{plugin: {attack}}}]\ncache: {{enabled: false}}\nmetrics: {{bootstrap: 10}}\n"
    )
    return p


def test_a_run_selecting_a_reference_that_fails_to_import_exits_2_naming_the_plugin(lazy_env, tmp_path):
    proc = cli("run", _config(tmp_path, "lazy-importfail"), "--output", tmp_path / "out", pythonpath=lazy_env)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and no_traceback(proc.stderr), proc.stderr
    assert (
        "attack plugin 'lazy-importfail' cannot be used: plugin 'lazy' (audit-lazy 0.4.0) is broken: its attack "
        "'lazy-importfail' points at audit_lazy.fails:Good, which cannot be imported (ModuleNotFoundError: No module "
        "named 'audit_no_such_dependency'). Other plugins keep working; see `audit plugins`."
    ) in err
    assert not (tmp_path / "out").exists()
    assert "warning: plugin 'lazy' " not in err  # the error says it all: no second copy as a warning


def test_a_run_selecting_a_good_reference_runs(lazy_env, tmp_path):
    proc = cli("run", _config(tmp_path, "lazy-good"), "--output", tmp_path / "ok", pythonpath=lazy_env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert results["attacks"]["lazy-good"]["nfe_per_image"] == 1
