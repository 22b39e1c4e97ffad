"""The plugin boundary (issue 17): each row of the issue's table, with the new behaviour.

Broken plugins are built in the test (in-memory plugins, or modules with a temporary
``.dist-info`` on PYTHONPATH for a subprocess), never installed into the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audit_core.plugin import manager as plugins
from audit_core.plugin.attacks import Attack, AttackOutput, AttackParams, Batch, flat_sum
from audit_core.plugin.targets import NOISE, VARIATION, Target, TargetParams
from audit_core import testing
from audit_core.testing import ToyParams, ToyTarget, make_attack, no_traceback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ helpers


def make_dist(root: Path, dist: str, version: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """A distribution on ``root`` (put it on PYTHONPATH): its files and a .dist-info with the
    ``audit`` entry points, as pip would leave it, without installing anything."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    info.joinpath("entry_points.txt").write_text("[audit]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


def cli(*args, pythonpath: Path | None = None, env: dict | None = None, cwd: Path | None = None):
    full = {**os.environ, **(env or {})}
    if pythonpath is not None:
        full["PYTHONPATH"] = os.pathsep.join([str(pythonpath), full.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "audit_core.cli", *map(str, args)], capture_output=True, text=True, env=full, timeout=300, cwd=cwd
    )


def plugin_of(*classes, kind="attacks"):
    return testing.plugin_of(kind, *classes)


class LossParams(AttackParams):
    t: int = 100


class Loss(Attack):
    """A grey-box loss: one eps call per image (1 NFE)."""

    name = "loss-ok"
    requires = frozenset({NOISE})
    Params = LossParams
    expected_nfe_per_image = 1
    fail_on: set[str] = set()  # image ids whose score the broken variants spoil

    def score(self, batch: Batch) -> AttackOutput:
        x = batch.images
        e = self.target.eps(x, self.params.t, batch.captions)
        return AttackOutput(scores=-flat_sum((e - x) ** 2))


# ------------------------------------------------------------------ table row 1: NFE counting


class ForgetfulTarget(ToyTarget):
    """A target written from the docs' first line only: eps never touches self.stats."""

    name = "toy-forgetful"

    def eps(self, z_t, t, captions=None):
        return self.params.scale * z_t


class GuidedTarget(ToyTarget):
    """Old style, costs 2 U-Net evaluations per row (classifier-free guidance) and says so."""

    name = "toy-guided"

    def eps(self, z_t, t, captions=None):
        self.stats.nfe += 2 * z_t.shape[0]
        return self.params.scale * z_t


class VariationOverride(Target):
    """Overrides ``variation`` itself (no cache, no counting): queries are counted by the core."""

    name = "toy-var-override"
    capabilities = frozenset({VARIATION})
    Params = TargetParams

    def __init__(self, params=None, context=None):
        super().__init__(params or TargetParams(), context)
        self.image_size, self.channels = 8, 1

    def variation(self, x, t, k, seeds, captions=None):
        return x.clone()


def test_a_target_that_forgets_to_count_gets_correct_counts():
    x = torch.zeros(5, 1, 8, 8)
    forgetful, old, guided = ForgetfulTarget(ToyParams()), ToyTarget(ToyParams()), GuidedTarget(ToyParams())
    for target in (forgetful, old, guided):
        target.eps(x, 10)
        target.eps_fn([None] * 3)(x[:3], 20)
    assert forgetful.stats.nfe == 8  # counted by the core: one per row
    assert old.stats.nfe == 8  # counted by the target itself, not twice
    assert guided.stats.nfe == 16  # the target's own count (2 per row) is kept
    # the default _variation runs DDIM on eps: t/k NFEs per row, counted although eps forgets
    forgetful.variation(x[:2], 100, 50, [1, 2])
    assert forgetful.stats.nfe == 8 + 2 * 2 and forgetful.stats.queries == 2
    v = VariationOverride()
    v.variation(x[:3], 100, 50, [1, 2, 3])
    assert v.stats.queries == 3


def test_forgetful_target_end_to_end_counts_and_no_warning(register_plugin, toy_run_config, audit_cli, tmp_path):
    register_plugin(plugin_of(ForgetfulTarget, kind="targets"), name="forgetful")
    cfg = toy_run_config([{"plugin": "pia", "params": {"t": 100}}, {"plugin": "naive-loss", "params": {"t": 100, "draws": 3}}], target="toy-forgetful")
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["attacks"]["pia"]["nfe_per_image"] == 2
    assert results["attacks"]["naive-loss"]["nfe_per_image"] == 3
    assert "NFE per image" not in out


class Silent(ToyTarget):
    """A black-box target whose _variation never calls eps and never counts its NFEs."""

    name = "toy-silent"
    capabilities = frozenset({VARIATION})

    def _variation(self, x, t, k, seeds, captions):
        return x.clone()


class Draws(Attack):
    name = "draws-3"
    requires = frozenset({VARIATION})
    expected_nfe_per_image = 3 * 2  # 3 variations at t/k = 2

    def score(self, batch):
        images, caps = batch.repeat(3)
        v = self.target.variation(images, 100, 50, batch.seed_matrix(3), caps)
        return AttackOutput(scores=-flat_sum((v - images) ** 2).reshape(len(batch), 3).mean(1))


def test_measured_nfe_differing_from_expected_is_a_warning(register_plugin, toy_run_config, audit_cli, tmp_path):
    register_plugin(plugin_of(Silent, kind="targets"), name="silent")
    register_plugin(plugin_of(Draws), name="draws")
    code, out = audit_cli("run", toy_run_config([{"plugin": "draws-3"}], target="toy-silent"), "--output", tmp_path / "r")
    assert code == 0, out
    flat = " ".join(out.split())
    assert "attack 'draws-3' (registered in-process as 'draws') expects 6 NFE per image, but target 'toy-silent' " in flat
    assert "counted 0 per image" in flat
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert "expects 6 NFE" in results["attacks"]["draws-3"]["extras"]["nfe_warning"]


# ------------------------------------------------------------------ rows 2-5: guarded score()


def _broken(kind: str):
    class Broken(Loss):
        name = f"bad-{kind}"

        def score(self, batch):
            out = super().score(batch)
            if not self.fail_on.intersection(batch.ids):
                return out
            if kind == "nan":
                s = out.scores.clone()
                s[[i for i, b in enumerate(batch.ids) if b in self.fail_on]] = float("nan")
                return AttackOutput(scores=s)
            if kind == "raise":
                raise RuntimeError("boom")
            if kind == "tensor":
                return out.scores
            if kind == "count":
                return AttackOutput(scores=out.scores[:-1])
            if kind == "int":  # ties by rounding: refused, not averaged into a meaningless AUC
                return AttackOutput(scores=(out.scores * 1000).long())
            if kind == "column":  # [B, 1]: refused, not flattened
                return AttackOutput(scores=out.scores[:, None])
            raise AssertionError(kind)

    return Broken


@pytest.mark.parametrize(
    "kind, message",
    [
        ("nan", "attack 'bad-nan' (registered in-process as 'bad') returned non-finite scores (NaN) for 1 of 3 images (e.g. members/img0003.png)."),
        ("raise", "attack 'bad-raise' (registered in-process as 'bad') failed in score(): RuntimeError: boom."),
        ("tensor", "attack 'bad-tensor' (registered in-process as 'bad') returned a bare torch.Tensor from score(). score() must return AttackOutput(scores=...)"),
        ("count", "attack 'bad-count' (registered in-process as 'bad') returned scores of shape [2] for a batch of 3 images."),
        ("int", "attack 'bad-int' (registered in-process as 'bad') returned scores of dtype torch.int64. Scores must be a floating-point Tensor"),
        ("column", "attack 'bad-column' (registered in-process as 'bad') returned scores of shape [3, 1] for a batch of 3 images."),
    ],
)
def test_a_misbehaving_attack_is_a_plugin_failure_and_the_run_resumes(kind, message, register_plugin, toy_run_config, audit_cli, tmp_path):
    cls = _broken(kind)
    cls.fail_on = {"members/img0003.png"}  # the 2nd batch of members (batch size 3): the 1st is scored and kept
    register_plugin(plugin_of(cls), name="bad")
    cfg = toy_run_config([{"plugin": cls.name}])
    run = tmp_path / "run"
    code, out = audit_cli("run", cfg, "--output", run)
    flat = " ".join(out.split())
    assert code == 1, out  # a plugin's bug: not 2 (bad input), not an internal error
    assert message in flat and "internal error" not in out and no_traceback(out)
    assert "This is a bug in that plugin, not in your config." in flat
    assert f"Everything scored before it is kept in {run}; resume with --resume" in flat
    if kind == "raise":
        assert f"Traceback: {run / 'audit.log'} (or run with --debug)." in flat
        assert "RuntimeError: boom" in (run / "audit.log").read_text()
    from audit_core.run.store import RunStore

    store = RunStore(run)
    try:
        assert len(store.done_ids(cls.name)) == 3  # the first batch is kept
    finally:
        store.close()
    cls.fail_on = set()  # the plugin is fixed: the run resumes where it stopped
    code, out = audit_cli("run", cfg, "--output", run, "--resume")
    assert code == 0, out
    assert len(json.loads((run / "results.json").read_text())["attacks"][cls.name]["roc"]) > 0


def test_debug_prints_the_traceback(register_plugin, toy_run_config, audit_cli, tmp_path):
    cls = _broken("raise")
    cls.fail_on = {"members/img0000.png"}
    register_plugin(plugin_of(cls), name="bad")
    from audit_core.plugin import guard

    try:
        code, out = audit_cli("run", toy_run_config([{"plugin": cls.name}]), "--output", tmp_path / "r", "--debug")
    finally:
        guard.debug = False
    assert code == 1 and "Traceback (most recent call last)" in out and 'raise RuntimeError("boom")' in out


class Exploding(ToyTarget):
    name = "toy-exploding"

    def eps(self, z_t, t, captions=None):
        raise ValueError("CUDA out of cheese")


def test_a_target_failure_names_the_target_and_the_attack(register_plugin, toy_run_config, audit_cli, tmp_path):
    register_plugin(plugin_of(Exploding, kind="targets"), name="exploding")
    code, out = audit_cli("run", toy_run_config([{"plugin": "pia"}], target="toy-exploding"), "--output", tmp_path / "r")
    flat = " ".join(out.split())
    assert code == 1 and no_traceback(out), out
    assert "target 'toy-exploding' (registered in-process as 'exploding') failed in eps(): ValueError: CUDA out of cheese." in flat
    assert "(It happened while attack 'pia' (from audit-pia 0.1.0) was scoring.)" in flat


# ------------------------------------------------------------------ rows 7-8: strict params


@pytest.mark.parametrize(
    "draws, message",
    [('"2"', "attacks[0].params.draws"), ("true", "attacks[0].params.draws"), ("2.5", "attacks[0].params.draws")],
)
def test_int_params_are_strict(draws, message, toy_run_config, audit_cli, tmp_path):
    cfg = toy_run_config([{"plugin": "naive-loss", "params": {"t": 100}}])
    code, out = audit_cli("run", cfg, "--set", f"attacks.0.params.draws={draws}", "--output", tmp_path / "r")
    assert code == 2 and message in out and "Input should be a valid integer" in out and no_traceback(out), out
    assert f"(--set attacks.0.params.draws={draws})" in out  # blamed on the command line
    assert not (tmp_path / "r").exists()


def test_yaml_natural_conversions_still_work():
    from pathlib import Path as P

    from audit_core.base.params import PluginParams

    class M(PluginParams):
        f: float = 0.0
        sizes: tuple[int, ...] = ()
        where: P | None = None

    m = M.model_validate({"f": 2, "sizes": [8, 16], "where": "a/b"})
    assert m.f == 2.0 and isinstance(m.f, float) and m.sizes == (8, 16) and m.where == P("a/b")


class ListParams(AttackParams):
    ts: list[int] = [100, 200]


class MultiT(Loss):
    """A multi-timestep loss attack: ``ts`` is a list-typed param (its value, never a sweep)."""

    name = "multi-t"
    Params = ListParams
    expected_nfe_per_image = None

    def score(self, batch):
        x = batch.images
        total = sum(flat_sum((self.target.eps(x, t, batch.captions) - x) ** 2) for t in self.params.ts)
        return AttackOutput(scores=-total)


def test_a_list_param_is_its_value_and_a_mixed_list_names_the_param(register_plugin, toy_run_config, audit_cli, tmp_path):
    register_plugin(plugin_of(MultiT), name="multi")
    code, out = audit_cli("run", toy_run_config([{"plugin": "multi-t", "params": {"ts": [100, 300, 500]}}]), "--output", tmp_path / "ok")
    assert code == 0, out
    results = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert list(results["attacks"]) == ["multi-t"] and "sweeps" not in results  # one entry, no grid
    assert results["attacks"]["multi-t"]["nfe_per_image"] == 3
    code, out = audit_cli("run", toy_run_config([{"plugin": "multi-t", "params": {"ts": [100, "x"]}}]), "--output", tmp_path / "bad")
    assert code == 2 and "attacks[0].params.ts[1] (" in out and "Input should be a valid integer" in out, out


# ------------------------------------------------------------------ did-you-mean and --set


def test_unknown_keys_and_names_get_a_did_you_mean(toy_run_config, audit_cli, tmp_path):
    cfg = toy_run_config([{"plugin": "naive-loss", "params": {"tt": 100}}])
    code, out = audit_cli("run", cfg, "--output", tmp_path / "a")
    flat = " ".join(out.split())
    assert code == 2 and "attacks[0].params.tt (" in flat and "unknown key; did you mean 't'? valid keys of attack plugin 'naive-loss': t, draws" in flat, out
    code, out = audit_cli("run", cfg, "--set", "attacks.0.plugin=naive-los", "--output", tmp_path / "b")
    flat = " ".join(out.split())
    assert code == 2 and "attacks[0].plugin (--set attacks.0.plugin=naive-los): unknown attack plugin 'naive-los'. Did you mean 'naive-loss'? Plugins installed:" in flat, out
    text = cfg.read_text().replace("members:", "membres:", 1)
    cfg.write_text(text)
    code, out = audit_cli("run", cfg, "--output", tmp_path / "c")
    flat = " ".join(out.split())
    assert code == 2 and "data.membres (" in flat and "unknown key; did you mean 'members'? valid keys: members, nonmembers" in flat, out


def test_a_bad_set_is_blamed_on_the_set_argument(toy_run_config, audit_cli, tmp_path):
    cfg = toy_run_config([{"plugin": "naive-loss"}])
    code, out = audit_cli("run", cfg, "--set", "run.seed=abc", "--output", tmp_path / "r")
    assert code == 2 and "run.seed (--set run.seed=abc): Input should be a valid integer" in " ".join(out.split()), out
    assert "line 1" not in out


# ------------------------------------------------------------------ make_attack, isolation


def test_make_attack_builds_like_the_runner(toy_target, isolated_plugins):
    attack = make_attack(MultiT, toy_target, ts=[10, 20])
    assert attack.params.ts == [10, 20] and attack.context.name == "multi-t"
    from audit_core.base.errors import ConfigError

    with pytest.raises(ConfigError, match="params.ts"):
        make_attack(MultiT, toy_target, ts="10")


def test_isolated_plugins_hides_installed_plugins(isolated_plugins, register_plugin):
    assert "pia" not in plugins.registry("attacks")
    register_plugin(plugin_of(MultiT), name="multi")
    assert list(plugins.registry("attacks")) == ["multi-t"]
    assert "l2" in plugins.registry("distances")  # the core's built-ins stay


def test_isolation_is_undone_afterwards():
    assert "pia" in plugins.registry("attacks")


# ------------------------------------------------------------------ rows 6 and 9: broken plugins, listing


GOOD = '''
import torch
from audit_core import Attack, AttackOutput, NOISE, flat_sum, hookimpl

class Good(Attack):
    name = "good-attack"
    requires = frozenset({NOISE})
    expected_nfe_per_image = 1

    def score(self, batch):
        x = batch.images
        return AttackOutput(scores=-flat_sum((self.target.eps(x, 100, batch.captions) - x) ** 2))

@hookimpl
def register_attacks(register):
    register(Good)
'''
TYPO = '''
from audit_core import hookimpl

@hookimpl
def register_attack(register):  # misspelled: register_attacks
    pass
'''
IMPORT_FAIL = "import audit_no_such_dependency  # not installed\n"
TWIN = '''
from audit_core import Attack, hookimpl

class Twin(Attack):
    name = "twin"

@hookimpl
def register_attacks(register):
    register(Twin)
'''


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_dist(root, "audit-good", "0.1.0", {"good": "audit_good"}, {"audit_good/__init__.py": GOOD})
    make_dist(root, "audit-typo", "0.3.0", {"typo": "audit_typo"}, {"audit_typo/__init__.py": TYPO})
    make_dist(root, "audit-importfail", "1.2.0", {"importfail": "audit_importfail"}, {"audit_importfail/__init__.py": IMPORT_FAIL})
    make_dist(root, "audit-twin-a", "0.1.0", {"twin-a": "audit_twin_a"}, {"audit_twin_a/__init__.py": TWIN})
    make_dist(root, "audit-twin-b", "0.2.0", {"twin-b": "audit_twin_b"}, {"audit_twin_b/__init__.py": TWIN})
    return root


TYPO_WARNING = (
    "warning: plugin 'typo' (distribution audit-typo 0.3.0) is disabled: it implements a hook that does not exist: "
    "'register_attack' is not a hook (did you mean 'register_attacks'?). Other plugins keep working; see `audit plugins`."
)
IMPORT_WARNING = (
    "warning: plugin 'importfail' (distribution audit-importfail 1.2.0) is disabled: importing audit_importfail failed "
    "(ModuleNotFoundError: No module named 'audit_no_such_dependency')."
)
CLASH_WARNING = (
    "warning: attack 'twin' is registered by 'twin-a' (audit-twin-a 0.1.0) and 'twin-b' (audit-twin-b 0.2.0); "
    "neither is used. Uninstall one, or load one with AUDIT_LOAD_PLUGINS."
)


def test_broken_plugins_are_disabled_and_listed(broken_env):
    proc = cli("plugins", pythonpath=broken_env)
    assert proc.returncode == 0, proc.stderr
    err = " ".join(proc.stderr.split())
    assert TYPO_WARNING in err and IMPORT_WARNING in err and CLASH_WARNING in err, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "good-attack" in out and "disabled: typo (audit-typo 0.3.0)" in out
    assert "name clash: twin-a: attack 'twin' also registered by twin-b (neither is used)" in out
    proc = cli("plugins", "--json", pythonpath=broken_env)
    assert proc.returncode == 0, proc.stderr
    data = {p["name"]: p for p in json.loads(proc.stdout)}
    assert data["good"]["registers"] == {"attacks": ["good-attack"]} and data["good"]["distribution"] == "audit-good"
    assert data["pia"]["registers"] == {"attacks": ["pia"]}
    assert "html-report" in data["html-report"]["registers"]["reporters"]
    assert "did you mean 'register_attacks'" in data["typo"]["broken"] and data["typo"]["version"] == "0.3.0"
    assert "ModuleNotFoundError" in data["importfail"]["broken"]
    assert data["twin-b"]["clashes"] == ["attack 'twin' also registered by twin-a"]


def _demo_config(tmp_path: Path, attack: str) -> Path:
    p = tmp_path / f"{attack}.yaml"
    p.write_text(
        "run: {name: x, device: cpu, batch_size: 4}\n"
        "target: {plugin: ddim, model: builtin:digits-ddpm}\n"
        "data: {members: builtin:digits/members, nonmembers: builtin:digits/nonmembers, limit: 4}\n"
        f"attacks: [{{plugin: {attack}}}]\n"
        "cache: {enabled: false}\nmetrics: {bootstrap: 10}\n"
    )
    return p


def test_a_run_needing_a_broken_plugin_exits_2_saying_why(broken_env, tmp_path):
    proc = cli("run", _demo_config(tmp_path, "typo-attack"), "--output", tmp_path / "a", pythonpath=broken_env)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and no_traceback(proc.stderr), proc.stderr
    assert "unknown attack plugin 'typo-attack'." in err
    assert "Disabled because they are broken (one may provide 'typo-attack'): importfail (audit-importfail 1.2.0: " in err
    assert "typo (audit-typo 0.3.0: it implements a hook that does not exist" in err
    proc = cli("run", _demo_config(tmp_path, "twin"), "--output", tmp_path / "b", pythonpath=broken_env)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and no_traceback(proc.stderr), proc.stderr
    assert (
        "attacks[0].plugin (twin.yaml, line 4): attack plugin 'twin' is registered twice, by 'twin-a' (audit-twin-a 0.1.0) "
        "and 'twin-b' (audit-twin-b 0.2.0), so neither is used." in err.replace(str(tmp_path) + "/", "")
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_other_commands_keep_working_next_to_broken_plugins(broken_env, tmp_path):
    proc = cli("run", _demo_config(tmp_path, "good-attack"), "--output", tmp_path / "ok", pythonpath=broken_env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert results["attacks"]["good-attack"]["nfe_per_image"] == 1


def test_trace_shows_register_hooks():
    proc = cli("plugins", "--json", env={"AUDIT_LOAD_PLUGINS": "example-attack", "AUDIT_TRACE_PLUGINS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "register_attacks" in proc.stderr


def test_the_pytest_plugin_imports_neither_torch_nor_the_cli():
    code = "import sys, audit_core.testing; print('torch' in sys.modules, 'audit_core.cli' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def test_public_api_lists_what_plugins_import():
    import audit_core
    from audit_core import api

    assert set(audit_core.__all__) - {"__version__"} == set(api.__all__)
    for name in api.__all__:
        assert getattr(audit_core, name) is getattr(api, name)
