"""End-to-end runs of `audit run` on the toy target with the example attack plugin."""

import csv
import json

import pytest

from audit_core.testing import no_traceback, plugin_of


@pytest.fixture
def toy_config(toy_plugin, image_folder, write_config, tmp_path):
    members = image_folder("members", n=6, seed=1)
    nonmembers = image_folder("nonmembers", n=6, seed=2)

    def make(**over):
        cfg = {
            "run": {"name": "toy", "seed": 3, "device": "cpu", "batch_size": 4},
            "target": {"plugin": "toy"},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": [{"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 2}}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 50},
        }
        for key, value in over.items():
            cfg[key] = value
        return write_config(cfg)

    return make


def test_run_writes_the_contract_run_directory(toy_config, audit_cli, tmp_path):
    out = tmp_path / "run"
    code, output = audit_cli("run", toy_config(), "--output", out)
    assert code == 0, output
    results = json.loads((out / "results.json").read_text())
    a = results["attacks"]["variation-similarity"]
    for key in ("auc", "asr", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"):
        assert set(a["metrics"][key]) >= {"value", "ci95"}
        lo, hi = a["metrics"][key]["ci95"]
        assert lo <= a["metrics"][key]["value"] <= hi
    assert a["nfe_per_image"] == 4  # n=2 variations x t/k=2 steps
    assert a["queries_per_image"] == 2
    assert a["n_members"] == 6 and a["n_nonmembers"] == 6
    assert a["metrics"]["tpr_at_0_1pct_fpr"]["supported"] is False
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 12
    assert set(rows[0]) == {"attack", "image_id", "path", "label", "score"}
    assert {r["label"] for r in rows} == {"member", "nonmember"}
    assert (out / "config.resolved.yaml").exists()
    assert results["environment"]["packages"]["torch"]
    assert len(a["gallery"]) == 12 and (out / a["gallery"][0]["reconstruction"]).exists()


def test_scores_do_not_depend_on_batch_size(toy_config, audit_cli, tmp_path):
    cfg = toy_config()
    a, b = tmp_path / "a", tmp_path / "b"
    assert audit_cli("run", cfg, "--output", a, "--set", "run.batch_size=1")[0] == 0
    assert audit_cli("run", cfg, "--output", b, "--set", "run.batch_size=64")[0] == 0
    assert (a / "scores.csv").read_text() == (b / "scores.csv").read_text()


def test_different_seed_changes_scores(toy_config, audit_cli, tmp_path):
    cfg = toy_config()
    assert audit_cli("run", cfg, "--output", tmp_path / "a")[0] == 0
    assert audit_cli("run", cfg, "--output", tmp_path / "b", "--set", "run.seed=4")[0] == 0
    assert (tmp_path / "a" / "scores.csv").read_text() != (tmp_path / "b" / "scores.csv").read_text()


def test_grey_box_only_attack_refused_on_variation_only_target(toy_plugin, register_plugin, image_folder, write_config, audit_cli, tmp_path):
    from audit_core import hookimpl
    from audit_core.plugin.attacks import Attack, AttackOutput
    from audit_core.plugin.targets import NOISE

    class Grey(Attack):
        name = "grey-probe"
        requires = frozenset({NOISE})

        def score(self, batch):
            return AttackOutput(scores=self.target.eps(batch.images, 10).flatten(1).sum(1))

    class P:
        @hookimpl
        def register_attacks(self, register):
            register(Grey)

    register_plugin(P(), name="grey-probe-plugin")
    cfg = write_config({
        "target": {"plugin": "toy-variation"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "grey-probe"}],
    })
    code, output = audit_cli("run", cfg, "--output", tmp_path / "out")
    assert code == 2
    assert "grey-probe" in output and "toy-variation" in output and "noise prediction" in output
    assert no_traceback(output)
    assert not (tmp_path / "out").exists()  # nothing half-written


class _BrokenReporter:
    """A reporter plugin with a bug: it raises while rendering."""

    from audit_core import hookimpl

    @hookimpl
    def register_reporters(self, register):
        from audit_core.run.reporting import Reporter

        class Broken(Reporter):
            name = "broken"

            def render(self, view):
                raise ZeroDivisionError("bug in a reporter")

        register(Broken)


def test_a_crashing_reporter_fails_the_run_other_reports_written_results_kept(toy_config, audit_cli, register_plugin, tmp_path):
    register_plugin(_BrokenReporter(), name="broken-reporter")
    out = tmp_path / "run"
    cfg = toy_config(reports=[{"plugin": "broken"}, {"plugin": "html-report"}])
    code, output = audit_cli("run", cfg, "--output", out)
    flat = " ".join(output.split())
    assert code == 1, output  # a CI job gating on the report must not pass
    assert "reporter 'broken' (registered in-process as 'broken-reporter') failed: ZeroDivisionError: bug in a reporter" in flat
    assert f"re-render with `audit report {out}`" in flat and "--keep-going" in flat and no_traceback(output)
    assert "AUC" in output  # the summary of the finished run is still shown
    assert json.loads((out / "results.json").read_text())["attacks"]  # results kept
    assert (out / "report.html").is_file()  # the reporter after the broken one still ran
    code, output = audit_cli("report", out)  # and on re-rendering
    assert code == 1 and "ZeroDivisionError" in output and no_traceback(output), output


def test_keep_going_makes_a_crashing_reporter_a_warning(toy_config, audit_cli, register_plugin, tmp_path):
    register_plugin(_BrokenReporter(), name="broken-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy_config(reports=[{"plugin": "broken"}]), "--output", out, "--keep-going")
    assert code == 0, output
    assert "reporter 'broken' (registered in-process as 'broken-reporter') failed" in output and "ZeroDivisionError" in output
    assert audit_cli("report", out, "--keep-going")[0] == 0


def test_keep_going_on_report_does_not_claim_the_config_names_no_reporters(toy_config, audit_cli, register_plugin, tmp_path):
    """`audit report RUN --keep-going` with the run's only reporter failing: the warning says so,
    and no misleading "the run's config names no reporters" follows."""
    register_plugin(_BrokenReporter(), name="broken-reporter")
    out = tmp_path / "run"
    assert audit_cli("run", toy_config(reports=[{"plugin": "broken"}]), "--output", out, "--keep-going")[0] == 0
    code, output = audit_cli("report", out, "--keep-going")
    assert code == 0 and "ZeroDivisionError" in output, output
    assert "names no reporters" not in output


def _misdirected_reporter(reporter_name: str, write) -> object:
    """A reporter that writes ``write(path, text)`` into a folder that does not exist."""
    from audit_core import Reporter

    class Misdirected(Reporter):
        name = reporter_name

        def render(self, view):
            path = view.dir / "no-such-folder" / "junit.xml"
            write(path, "<testsuite/>")
            return [path]

    return plugin_of("reporters", Misdirected)


def test_a_reporter_writing_through_write_text_is_named_with_its_path_not_the_temporary_file(
    toy_config, audit_cli, register_plugin, tmp_path
):
    from audit_core import write_text

    register_plugin(_misdirected_reporter("atomic-misdirected", write_text), name="atomic-misdirected-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy_config(reports=[{"plugin": "atomic-misdirected"}]), "--output", out)
    flat = " ".join(output.split())
    assert code == 2, output
    assert f"cannot write {out / 'no-such-folder' / 'junit.xml'}: No such file or directory" in flat, output
    assert ".tmp" not in flat and no_traceback(output)


def test_a_reporter_that_cannot_write_names_itself_and_the_path(toy_config, audit_cli, register_plugin, tmp_path):
    register_plugin(_misdirected_reporter("misdirected", lambda path, text: path.write_text(text)), name="misdirected-reporter")
    out = tmp_path / "run"
    code, output = audit_cli("run", toy_config(reports=[{"plugin": "misdirected"}]), "--output", out)
    flat = " ".join(output.split())
    assert code == 2, output
    assert f"reporter 'misdirected' (registered in-process as 'misdirected-reporter') cannot write {out / 'no-such-folder' / 'junit.xml'}" in flat
    assert "No such file or directory" in flat and no_traceback(output)
    assert json.loads((out / "results.json").read_text())["attacks"]


def test_report_passes_params_to_the_reporter(toy_config, audit_cli, tmp_path):
    out = tmp_path / "run"
    assert audit_cli("run", toy_config(), "--output", out)[0] == 0
    code, output = audit_cli("report", out, "--reporter", "html-report", "--param", "title=Quarterly audit XYZ")
    assert code == 0, output
    assert "Quarterly audit XYZ" in (out / "report.html").read_text()
    code, output = audit_cli("report", out, "--reporter", "html-report", "--param", "no_such_param=1")
    assert code == 2 and "no_such_param" in output and no_traceback(output), output
    code, output = audit_cli("report", out, "--param", "title=x")
    assert code == 2 and "--param needs exactly one --reporter" in output, output


def test_report_on_a_corrupt_results_file_exits_2(toy_config, audit_cli, tmp_path):
    out = tmp_path / "run"
    assert audit_cli("run", toy_config(), "--output", out)[0] == 0
    (out / "results.json").write_text('{"attacks": {"x"')
    code, output = audit_cli("report", out)
    assert code == 2 and "results.json" in output and "not valid JSON" in output and no_traceback(output), output


def test_images_are_decoded_once_and_conversions_noted_once(image_folder, toy_plugin, write_config, audit_cli, tmp_path, monkeypatch):
    import audit_core.data as data_mod  # the run's ImageLoader decodes through data.open_image

    calls = []
    real = data_mod.open_image
    monkeypatch.setattr(data_mod, "open_image", lambda r, *a: calls.append(r.id) or real(r, *a))  # *a: the bytes already read
    members = image_folder("m", n=5, size=12, channels=3, seed=1)  # the toy target wants 1x8x8
    nonmembers = image_folder("nm", n=5, size=12, channels=3, seed=2)
    attack = {"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 1}}
    cfg = write_config({
        "run": {"seed": 0, "device": "cpu", "batch_size": 3},
        "target": {"plugin": "toy"},
        "data": {"members": str(members), "nonmembers": str(nonmembers)},
        "attacks": [{**attack, "name": "a"}, {**attack, "name": "b"}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 10  # 2 attacks + galleries, one decode each
    notes = json.loads((tmp_path / "run" / "results.json").read_text())["run"]["notes"]
    assert any(n.startswith("10 image(s) were converted to 1 channel(s) and/or resized to 8x8") for n in notes), notes
