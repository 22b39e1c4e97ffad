"""A third-party plugin author's mistakes (issue 34, the plugin author's path): each case, before
its fix, corrupted the run directory or misled the author."""

from __future__ import annotations

import json

import pytest

from audit_core import hookimpl
from audit_core.testing import no_traceback


def _reporter_returning(value_of):
    class Plugin:
        @hookimpl
        def register_reporters(self, register):
            from audit_core import Reporter, write_text

            class Sloppy(Reporter):
                name = "sloppy"

                def render(self, view):
                    path = view.dir / "sloppy.txt"
                    write_text(path, "x\n")
                    return value_of(path)

            register(Sloppy)

    return Plugin()


@pytest.mark.parametrize("value_of", [str, lambda p: p, lambda p: None], ids=["str", "path", "none"])
def test_a_reporter_returning_a_bare_path_fails_clearly_and_lists_no_junk_in_the_manifest(
    value_of, toy, audit_cli, register_plugin, tmp_path
):
    """`return str(path)` was read one character at a time: every character joined the run's
    manifest (so `--force` would later clear files named `t`, `m`, `p` ... in the run directory)
    and `Wrote t` was printed per character, exit 0."""
    register_plugin(_reporter_returning(value_of), name="sloppy-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy(reports=[{"plugin": "sloppy"}]), "--output", out)
    flat = " ".join(output.split())
    assert code == 1, output
    assert "reporter 'sloppy' (registered in-process as 'sloppy-reporter') failed: TypeError: render() returned" in flat
    assert "it must return the list of the paths it wrote, e.g. [path]" in flat and no_traceback(output)
    listed = json.loads((out / ".audit-run.json").read_text())["files"]
    assert all(len(f) > 1 for f in listed), listed
    assert json.loads((out / "results.json").read_text())["attacks"]  # the results are kept


def test_a_reporter_returning_a_generator_still_works(toy, audit_cli, register_plugin, tmp_path):
    register_plugin(_reporter_returning(lambda p: (q for q in [p])), name="sloppy-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy(reports=[{"plugin": "sloppy"}]), "--output", out)
    assert code == 0, output
    assert "sloppy.txt" in json.loads((out / ".audit-run.json").read_text())["files"]
