"""Plugin discovery, allow-list, hookimpl validation, tracing and CLI exit codes."""

import json
import os
import subprocess
import sys

import pytest

from audit_core import hookimpl
from audit_core.plugin import factory, manager as plugins
from audit_core.base.errors import PluginError
from audit_core.testing import no_traceback, registered


def cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "audit_core.cli", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_installed_entry_point_is_discovered():
    names = {p["name"]: p for p in plugins.get_plugins()}
    ex = names["example-attack"]
    assert ex["distribution"] == "audit-example-attack"
    assert ex["version"] == "0.1.0"
    assert ex["hooks"] == ["register_attacks"]
    assert "variation-similarity" in plugins.registry("attacks")


def test_plugins_json_command_lists_distribution_version_hooks():
    proc = cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    data = {p["name"]: p for p in json.loads(proc.stdout)}
    assert data["example-attack"]["distribution"] == "audit-example-attack"
    assert "register_attacks" in data["example-attack"]["hooks"]


def test_allow_list_limits_loaded_plugins():
    proc = cli("plugins", "--json", env={"AUDIT_LOAD_PLUGINS": ""})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    proc = cli("plugins", "--json", env={"AUDIT_LOAD_PLUGINS": "audit-example-attack"})
    assert [p["name"] for p in json.loads(proc.stdout)] == ["example-attack"]


def test_trace_env_prints_hook_calls():
    proc = cli("plugins", "--json", env={"AUDIT_LOAD_PLUGINS": "example-attack", "AUDIT_TRACE_PLUGINS": "1"})
    assert proc.returncode == 0
    assert "register_attacks" in proc.stderr  # registration goes through pluggy, so it is traced


def test_hookimpl_matching_no_spec_is_rejected():
    class Typo:
        @hookimpl
        def register_attack(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match="does not exist"):
        with registered(Typo(), name="typo-plugin"):
            pass
    assert plugins.pm.get_plugin("typo-plugin") is None


def test_in_memory_plugin_registers_and_unregisters():
    from audit_core.plugin.attacks import Attack

    class Dummy(Attack):
        name = "dummy-attack"

    class P:
        @hookimpl
        def register_attacks(self, register):
            register(Dummy)

    with registered(P(), name="dummy"):
        assert plugins.registry("attacks")["dummy-attack"] is Dummy
        assert Dummy.plugin_name == "dummy"
    assert "dummy-attack" not in plugins.registry("attacks")


def test_duplicate_names_are_an_error():
    from audit_core.plugin.attacks import Attack

    class A(Attack):
        name = "variation-similarity"

    class P:
        @hookimpl
        def register_attacks(self, register):
            register(A)

    with registered(P(), name="dup"):
        assert "variation-similarity" not in plugins.registry("attacks")  # ambiguous: neither is used
        assert plugins.clashes("attacks")["variation-similarity"] == ["example-attack", "dup"]
        with pytest.raises(PluginError, match="registered twice, by 'example-attack' .audit-example-attack 0.1.0. and 'dup'"):
            factory.lookup("attacks", "variation-similarity")
    assert factory.lookup("attacks", "variation-similarity") is not A


def test_version_and_help(audit_cli):
    code, out = audit_cli("--version")
    assert code == 0 and "audit 0.1.0" in out
    for cmd in ([], ["run"], ["plugins"], ["report"], ["cache"], ["cache", "info"]):
        code, out = audit_cli(*cmd, "--help")
        assert code == 0 and "Usage" in out, (cmd, out)


def test_help_shows_plain_metavars(audit_cli):
    """No Typer type tags (`<bool>`, `<list[str]>`) and no `{config}` in the usage lines."""
    for cmd in ([], ["run"], ["sweep"], ["plugins"], ["report"], ["serve"], ["cache", "info"]):
        code, out = audit_cli(*cmd, "--help")
        assert code == 0, (cmd, out)
        assert "<bool>" not in out and "<list[" not in out and "{" not in out, (cmd, out)
    _, out = audit_cli("run", "--help")
    assert "run [OPTIONS] CONFIG" in out and "KEY=VALUE" in out


@pytest.mark.parametrize(
    "mutate, culprit",
    [
        (lambda c: c["data"].update(colour="red"), "data.colour"),
        (lambda c: c["run"].update(seed="many"), "run.seed"),
        (lambda c: c["data"].update(members="/does/not/exist"), "/does/not/exist"),
        (lambda c: c["target"].update(plugin="no-such-target"), "no-such-target"),
        (lambda c: c["attacks"][0].update(plugin="no-such-attack"), "no-such-attack"),
        (lambda c: c["attacks"][0]["params"].update(t=5000), "t=5000"),
        (lambda c: c["attacks"][0]["params"].update(k=30), "k=30"),
        (lambda c: c["attacks"][0]["params"].update(distance="cosine"), "cosine"),
        (lambda c: c["attacks"][0].update(scorer="magic"), "attacks[0].scorer"),
    ],
)
def test_bad_config_exits_2_naming_the_culprit(mutate, culprit, toy_plugin, image_folder, write_config, audit_cli, tmp_path):
    cfg = {
        "run": {"name": "bad", "seed": 0},
        "target": {"plugin": "toy"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 1}}],
    }
    mutate(cfg)
    code, out = audit_cli("run", write_config(cfg), "--output", tmp_path / "out")
    assert code == 2, out
    assert culprit in out
    assert no_traceback(out)
    assert not (tmp_path / "out").exists()


def test_broken_yaml_exits_2(audit_cli, tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("run: {name: x\n")
    code, out = audit_cli("run", p)
    assert code == 2 and "broken YAML" in out and no_traceback(out)


def test_internal_failure_exits_1(register_plugin, toy_plugin, image_folder, write_config, audit_cli, tmp_path):
    from audit_core.plugin.attacks import Attack

    class Boom(Attack):
        name = "boom"

        def score(self, batch):
            raise RuntimeError("kaboom")

    class P:
        @hookimpl
        def register_attacks(self, register):
            register(Boom)

    register_plugin(P(), name="boom-plugin")
    cfg = write_config({
        "target": {"plugin": "toy"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "boom"}],
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "o")
    # a plugin's bug: exit 1, one paragraph naming the attack; the traceback goes to the log
    assert code == 1 and "internal error" not in out and no_traceback(out), out
    assert "attack 'boom' (registered in-process as 'boom-plugin') failed in score(): RuntimeError: kaboom" in out
    assert "Traceback (most recent call last)" in (tmp_path / "o" / "audit.log").read_text()


def test_report_on_non_run_dir_exits_2(audit_cli, tmp_path):
    code, out = audit_cli("report", tmp_path)
    assert code == 2 and "not a finished run directory" in out


def test_commands_of_installed_plugins_are_there_after_an_isolated_test_ran_the_cli_first():
    """The CLI added plugin commands once per process: when the first CLI call ran under
    `isolated_plugins` (as a plugin author's first test may), `audit serve` (the http plugin's
    command) stayed missing for the rest of the session."""
    import subprocess
    import sys

    script = (
        "from audit_core.plugin.manager import isolated\n"
        "from audit_core.testing import invoke\n"
        "with isolated():\n"
        "    assert invoke(['plugins'])[0] == 0\n"
        "code, out = invoke(['serve', '--help'])\n"
        "assert code == 0, out\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
