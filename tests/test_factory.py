"""One way to make a plugin object (issue 29, item 2): every site goes through
``audit_core.plugin.factory``; params are strict for every kind (a third-party ``Params`` that
forgot ``extra="forbid"`` included), errors have one wording (the key, its place, the valid
keys), and the testing kit's ``make_attack`` resolves defaults and presets as the runner does."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel

from audit_core.base.errors import ConfigError
from audit_core.plugin import factory
from audit_core.plugin.attacks import Attack, AttackOutput, AttackParams
from audit_core.plugin.generators import Generator
from audit_core.plugin.targets import NOISE
from audit_core.run.executors import Executor, InProcessExecutor
from audit_core.run.reporting import Reporter, build_reporter
from audit_core.testing import make_attack, no_traceback, plugin_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LaxParams(BaseModel):  # a third-party Params that forgot extra="forbid"
    title: str = "x"


class MemReporter(Reporter):
    name = "mem-report"
    Params = LaxParams

    def render(self, view, out_dir):
        return []


class MemExecutorParams(BaseModel):  # lax too
    workers: int = 1


class MemExecutor(InProcessExecutor):
    name = "mem-exec"
    Params = MemExecutorParams


class MemGenParams(BaseModel):  # lax too
    steps: int = 10


class MemGenerator(Generator):
    name = "mem-gen"
    Params = MemGenParams

    def generate(self, prompts, seeds):  # never called: the params are refused first
        raise AssertionError("not reached")


class PresetParams(AttackParams):
    t: int = 100
    k: int = 1
    preset: str | None = None


class PresetAttack(Attack):
    name = "preset-loss"
    requires = frozenset({NOISE})
    Params = PresetParams
    presets = {"paper": {"t": 7, "k": 7}}

    @classmethod
    def defaults_for(cls, target):
        return {"k": 2}

    def score(self, batch):
        return AttackOutput(scores=torch.zeros(len(batch)))


def test_unknown_key_refused_for_every_kind_even_when_params_allow_it():
    for cls, typo, valid in ((MemReporter, "titel", "title"), (MemExecutor, "wrkers", "workers"), (MemGenerator, "stepz", "steps")):
        with pytest.raises(ConfigError) as info:
            factory.validate(cls, {typo: 1}, label="--here")
        text = str(info.value)
        assert typo in text and f"did you mean {valid!r}" in text and "valid keys" in text and "--here" in text, text
    assert factory.validate(MemReporter, {"title": "ok"}).title == "ok"  # still the plugin's own class
    assert type(factory.validate(MemReporter, {})) is LaxParams


def test_reporter_typo_in_config_exits_2_naming_key_line_and_valid_keys(toy_run_config, register_plugin, audit_cli, tmp_path):
    register_plugin(plugin_of("reporters", MemReporter), name="mem-reporters")
    cfg = toy_run_config([{"plugin": "naive-loss", "params": {"t": 10}}])
    text = cfg.read_text() + "reports:\n- plugin: mem-report\n  params:\n    titel: hi\n"
    cfg.write_text(text)
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 2 and no_traceback(out), out
    assert "reports[0].params.titel" in out and "line" in out and "valid keys" in out and "title" in out, out


def test_executor_typo_in_config_exits_2(toy_run_config, register_plugin, audit_cli, tmp_path):
    register_plugin(plugin_of("executors", MemExecutor), name="mem-executors")
    cfg = toy_run_config([{"plugin": "naive-loss", "params": {"t": 10}}], executor={"plugin": "mem-exec", "wrkers": 2})
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 2 and no_traceback(out), out
    assert "run.executor.wrkers" in out and "line" in out and "workers" in out, out


def test_reporter_built_for_audit_report_is_strict(register_plugin):
    register_plugin(plugin_of("reporters", MemReporter), name="mem-reporters")
    with pytest.raises(ConfigError) as info:
        build_reporter("mem-report", {"titel": "x"})
    # one wording for every source: header, `KEY (PLACE): what`, the valid keys of the plugin
    assert str(info.value).startswith("invalid config: --param titel (command line): unknown key; did you mean 'title'?"), info.value
    assert "valid keys of reporter plugin 'mem-report'" in str(info.value)
    assert build_reporter("mem-report", {"title": "y"}).params.title == "y"


def test_generator_typo_is_strict_and_worded_like_the_rest(register_plugin, audit_cli, tmp_path):
    from audit_core.copyright.reference import build_generator

    register_plugin(plugin_of("generators", MemGenerator), name="mem-generators")
    with pytest.raises(ConfigError) as info:
        build_generator("mem-gen", {"stepz": 3}, "cpu")
    assert "stepz" in str(info.value) and "valid keys" in str(info.value) and "steps" in str(info.value)
    assert str(info.value).startswith("invalid config: --param stepz (--generator mem-gen): unknown key"), info.value
    gcls, params = build_generator("mem-gen", {"steps": 3}, "cpu")
    assert gcls is MemGenerator and params.steps == 3


def test_make_attack_applies_defaults_then_preset_then_yours(toy_target):
    assert make_attack(PresetAttack, toy_target).params.k == 2  # the target's default
    a = make_attack(PresetAttack, toy_target, preset="paper")
    assert (a.params.t, a.params.k) == (7, 7)  # the preset wins over the default
    assert make_attack(PresetAttack, toy_target, preset="paper", t=9).params.t == 9  # yours win
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*presets: paper"):
        make_attack(PresetAttack, toy_target, preset="nope")


def test_build_takes_a_looked_up_class_and_validated_params(toy_target):
    from audit_core.plugin.attacks import AttackContext

    params = factory.validate(PresetAttack, {"t": 5})
    ctx = AttackContext(name="x", seed_key="x")
    got, attack = factory.build_with_params("attacks", PresetAttack, params, toy_target, ctx)
    assert got is params and attack.params is params
    new, again = factory.with_params(PresetAttack, params, {"t": 6}, toy_target, ctx)
    assert new.t == 6 and again.params.t == 6 and params.t == 5
    with pytest.raises(ConfigError, match=r"^second look: .*params\.t"):
        factory.with_params(PresetAttack, params, {"t": "six"}, toy_target, ctx, where="second look")


def test_with_defaults_is_applied_once(write_config):
    from audit_core.base.config import load_config
    from audit_core.run.defaults import with_defaults

    p = write_config({"target": {"plugin": "toy"}, "data": {"members": "m", "nonmembers": "n"}, "attacks": [{"plugin": "pia"}]})
    once = with_defaults(load_config(p, []))
    assert with_defaults(once) is once and once.cfg.run.name == "audit"


def test_executor_class_is_an_executor():
    assert issubclass(MemExecutor, Executor)
