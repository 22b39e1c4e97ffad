"""The run plan (issue 29, item 4): built once, in numbered steps, immutable; every plugin class
looked up once; the second stage and the shift check take its pieces, not the Runner."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from audit_core.base.config import load_config
from audit_core.plugin import factory
from audit_core.run import plan as run_plan
from audit_core.run.runner import Runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_plan_is_built_once_and_is_immutable(toy_run_config, tmp_path):
    cfg = toy_run_config([{"plugin": "naive-loss", "params": {"t": 10}}, {"plugin": "naive-loss", "name": "b", "params": {"t": 20}}])
    runner = Runner(load_config(cfg, []), output=tmp_path / "run")
    plan = runner.prepare()
    assert runner.plan is plan and dataclasses.is_dataclass(plan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.target = None  # type: ignore[misc]
    # the Runner reads the plan's fields; it holds no copies of them
    assert runner.target is plan.target and runner.attacks is plan.attacks and runner.run_dir == plan.run_dir
    assert [pa.name for pa in plan.order] == ["naive-loss", "b"] and plan.second is None
    assert "target" not in vars(runner) and "attacks" not in vars(runner)


def test_every_plugin_class_is_looked_up_once(toy_run_config, tmp_path, monkeypatch):
    calls: list[tuple[str, str]] = []
    real = factory.lookup

    def counting(what, name, where=None):
        calls.append((what, name))
        return real(what, name, where)

    monkeypatch.setattr(factory, "lookup", counting)
    cfg = toy_run_config([{"plugin": "naive-loss", "params": {"t": [10, 20]}}, {"plugin": "pia", "params": {"t": 10}}])
    Runner(load_config(cfg, []), output=tmp_path / "run").prepare()
    attacks = [n for what, n in calls if what == "attacks"]
    assert sorted(attacks) == ["naive-loss", "pia"], calls  # one lookup per config entry, not per use
    assert [n for what, n in calls if what == "targets"] == ["toy"]


def test_the_plan_steps_are_in_order_and_numbered():
    src = inspect.getsource(run_plan.make_plan)
    marks = [src.index(f"# {i}. ") for i in range(1, 6)]
    assert marks == sorted(marks)
    for word in ("check inputs", "resolve plugins", "validate", "estimate cost and memory", "plan the jobs"):
        assert word in run_plan.__doc__


def test_second_stage_shift_check_reporting_executors_and_attestation_take_no_runner():
    from audit_core.copyright import rescore, shift
    from audit_core.run import attest, executors, reporting

    fns = [rescore.plan_second_stage, shift.reference_block, rescore.SecondStage.run, attest.write_run_attestation, attest.predicate]
    fns += [f for mod in (reporting, executors) for _, f in inspect.getmembers(mod, inspect.isfunction) if f.__module__ == mod.__name__]
    for fn in fns:
        assert "runner" not in inspect.signature(fn).parameters, fn
