"""What a newcomer meets and what the run owns (issues 22 and 18, runner side): reports by
default, `audit report --reporter`, the verdict, notes and plain progress lines in the terminal,
safe reruns, the default run name, the run directory's manifest, resume after an image changed,
and validation before the target's model is loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from audit_core.base import secrets
from audit_core.testing import ToyTarget, no_traceback, write_images

VS = {"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 1}}
TOKEN = "tok-9f8e7d6c5b4a39281706"


@pytest.fixture
def toy(toy_plugin, image_folder, write_config):
    """``toy(**sections)``: a config over 4 + 4 toy images (no `reports:` key unless given)."""
    members = image_folder("members", n=4, seed=1)
    nonmembers = image_folder("nonmembers", n=4, seed=2)

    def make(name: str = "audit.yaml", **over):
        cfg = {
            "run": {"name": "toy", "seed": 3, "device": "cpu", "batch_size": 3},
            "target": {"plugin": "toy"},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": [VS],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
        }
        for key, value in over.items():
            if value is None:
                cfg.pop(key, None)
            elif isinstance(value, dict) and isinstance(cfg.get(key), dict) and key != "data":
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return write_config(cfg, name)

    make.members, make.nonmembers = members, nonmembers
    return make


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def one_paragraph_error(output: str) -> bool:
    return no_traceback(output) and output.count("Error:") == 1


# --------------------------------------------------------------------------- reports by default
def test_config_without_reports_key_writes_html_markdown_and_evidence(toy, audit_cli, tmp_path):
    code, out = audit_cli("run", toy(), "--output", tmp_path / "run")
    assert code == 0, out
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "run" / "summary.md").is_file()
    assert (tmp_path / "run" / "evidence.html").is_file() and (tmp_path / "run" / "evidence.md").is_file()
    resolved = yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())
    assert [r["plugin"] for r in resolved["reports"]] == ["html-report", "markdown-report", "evidence-report"]


def test_empty_reports_list_writes_none_and_audit_report_adds_one(toy, audit_cli, tmp_path):
    run = tmp_path / "run"
    code, out = audit_cli("run", toy(reports=[]), "--output", run)
    assert code == 0, out
    assert not (run / "report.html").exists()
    code, out = audit_cli("report", run)
    assert code == 0 and "--reporter html-report" in " ".join(out.split())
    code, out = audit_cli("report", run, "--reporter", "html-report")
    assert code == 0, out
    assert (run / "report.html").is_file() and not (run / "summary.md").exists()
    assert "report.html" in json.loads((run / ".audit-run.json").read_text())["files"]
    code, out = audit_cli("report", run, "--reporter", "html-reprot")
    assert code == 2 and "html-report" in out and one_paragraph_error(out), out


def test_audit_report_with_missing_or_broken_config(toy, audit_cli, tmp_path):
    run = tmp_path / "run"
    code, out = audit_cli("run", toy(reports=[]), "--output", run)
    assert code == 0, out
    (run / "config.resolved.yaml").write_text("reports: [unclosed\n")
    code, out = audit_cli("report", run)
    assert code == 2 and "config.resolved.yaml" in out and one_paragraph_error(out), out
    (run / "config.resolved.yaml").write_text("reports: [{plugin: html-report, params: {nope: 1}}]\n")
    code, out = audit_cli("report", run)
    assert code == 2 and "config.resolved.yaml" in out and one_paragraph_error(out), out
    (run / "config.resolved.yaml").unlink()
    code, out = audit_cli("report", run)
    assert code == 2 and "config.resolved.yaml" in out and one_paragraph_error(out), out
    assert len(out.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the terminal
def test_piped_output_shows_progress_lines_the_verdict_and_the_notes(toy, image_folder, audit_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_PROGRESS_SECONDS", "0")  # a line per batch (default: every few seconds)
    big = image_folder("big", n=4, size=12, channels=3, seed=5)  # converted to 1x8x8 by the toy target
    cfg = toy(data={"members": str(big), "nonmembers": str(toy.nonmembers)}, attacks=[VS, {**VS, "name": "second"}])
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")  # captured: not a terminal
    assert code == 0, out
    lines = out.splitlines()
    for name in ("variation-similarity", "second"):
        progress = [ln for ln in lines if ln.startswith(f"{name}: ") and "images" in ln]
        assert progress and "8/8 images" in progress[-1] and "img/s" in progress[-1] and "NFE/img" in progress[-1]
    verdicts = [ln for ln in lines if ln.startswith("Verdict")]
    assert len(verdicts) == 2 and all("AUC" in v for v in verdicts), verdicts
    assert any("4 image(s) were converted to 1 channel(s)" in ln for ln in lines)


def test_copyright_mode_prints_the_set_level_verdict(toy, image_folder, audit_cli, tmp_path):
    data = {"suspects": str(image_folder("s", n=4, seed=1)), "reference": str(image_folder("r", n=5, seed=2))}
    code, out = audit_cli("run", toy(data=data), "--output", tmp_path / "run")
    assert code == 0, out
    lines = out.splitlines()
    conclusion = [ln for ln in lines if ln.startswith("Conclusion: ")]
    assert len(conclusion) == 1 and conclusion[0].split(":")[1].strip() in ("EVIDENCE", "NO EVIDENCE", "INCONCLUSIVE")
    assert any(ln.startswith("p-values: combined (rank) p = ") for ln in lines)
    assert not any(ln.startswith("Verdict") for ln in lines)  # one conclusion, no per-attack verdicts


def test_sweep_table_charges_shared_queries_fairly():
    from audit_core.run.console import sweep_seconds

    attacks = {f"a[n={n}]": {"seconds": s, "queries_per_image": n, "nfe_per_image": 2 * n} for n, s in ((10, 9.0), (5, 0.5), (1, 0.5))}
    sweeps = {"a": {"points": [{"attack": name} for name in attacks]}}
    fair = sweep_seconds(sweeps, attacks)
    assert sum(fair.values()) == pytest.approx(10.0)
    assert fair["a[n=10]"] == pytest.approx(10 * 10 / 16) and fair["a[n=1]"] == pytest.approx(10 / 16)


# --------------------------------------------------------------------------- safe reruns
def test_rerun_with_a_changed_config_into_a_finished_run_is_refused(toy, audit_cli, tmp_path):
    run = tmp_path / "run"
    code, out = audit_cli("run", toy(), "--output", run)
    assert code == 0, out
    before = snapshot(run)
    changed = toy(name="b.yaml", run={"seed": 4})
    code, out = audit_cli("run", changed, "--output", run)
    msg = " ".join(out.split())
    assert code == 2 and one_paragraph_error(out), out
    assert "--output" in msg and "--resume" in msg and "--force" in msg
    assert snapshot(run) == before
    code, out = audit_cli("run", changed, "--output", run, "--force")
    assert code == 0, out
    assert json.loads((run / "results.json").read_text())["run"]["seed"] == 4
    code, out = audit_cli("run", changed, "--output", run)  # the same config again: replaced, fine
    assert code == 0, out


def test_default_run_name_comes_from_the_config_file(toy, audit_cli, tmp_path, monkeypatch):
    cfg = toy(name="my-audit.yaml", run={"name": None})
    raw = yaml.safe_load(cfg.read_text())
    raw["run"].pop("name")
    cfg.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    code, out = audit_cli("run", cfg)
    assert code == 0, out
    assert (tmp_path / "reports" / "my-audit" / "results.json").is_file()
    assert json.loads((tmp_path / "reports" / "my-audit" / "results.json").read_text())["run"]["name"] == "my-audit"


# --------------------------------------------------------------------------- the run owns only what it writes
def test_output_into_a_folder_that_is_not_a_run_is_refused(toy, audit_cli, tmp_path, monkeypatch):
    user = tmp_path / "project"
    user.mkdir()
    (user / ".env").write_text(f"TOKEN={TOKEN}\n")
    (user / "results.json").write_text("{}")
    before = snapshot(user)
    code, out = audit_cli("run", toy(), "--output", user)
    assert code == 2 and "not a run directory" in out and one_paragraph_error(out), out
    assert snapshot(user) == before and not (user / "state.sqlite").exists()
    monkeypatch.chdir(user)
    code, out = audit_cli("run", toy(), "--output", ".")
    assert code == 2 and one_paragraph_error(out), out
    assert snapshot(user) == before


def test_scrub_and_clear_touch_only_the_runs_files(toy, audit_cli, tmp_path):
    run = tmp_path / "run"
    secrets.register(TOKEN)
    try:
        code, out = audit_cli("run", toy(), "--output", run)
        assert code == 0, out
        manifest = json.loads((run / ".audit-run.json").read_text())
        assert {"results.json", "scores.csv", "config.resolved.yaml", "state.sqlite", "report.html"} <= set(manifest["files"])
        (run / ".env").write_text(f"TOKEN={TOKEN}\n")  # the user's own files, dropped in later
        (run / "notes.csv").write_text(f"a,{TOKEN}\n")
        (run / "artifacts" / "mine.txt").write_text("keep me")
        code, out = audit_cli("run", toy(), "--output", run, "--no-resume")  # start over: clears the run's files
        assert code == 0, out
        assert (run / ".env").read_text() == f"TOKEN={TOKEN}\n" and (run / "notes.csv").read_text() == f"a,{TOKEN}\n"
        assert (run / "artifacts" / "mine.txt").read_text() == "keep me"
    finally:
        secrets.forget_all()


# --------------------------------------------------------------------------- resume
def test_resume_rescores_an_image_whose_content_changed(toy, audit_cli, tmp_path):
    run, cfg = tmp_path / "run", toy()
    code, out = audit_cli("run", cfg, "--output", run, "--set", "reports=[]")
    assert code == 0, out
    scores = lambda: {ln.split(",")[1]: ln.split(",")[4] for ln in (run / "scores.csv").read_text().splitlines()[1:]}  # noqa: E731
    first = scores()
    victim = sorted(toy.members.iterdir())[0]
    write_images(tmp_path / "other", 1, seed=99)
    victim.write_bytes(next((tmp_path / "other").iterdir()).read_bytes())
    code, out = audit_cli("run", cfg, "--output", run, "--resume", "--set", "reports=[]")
    assert code == 0, out
    notes = json.loads((run / "results.json").read_text())["run"]["notes"]
    assert any("1 image(s) changed since they were scored" in n for n in notes), notes
    second = scores()
    changed = [i for i in first if first[i] != second[i]]
    assert changed == [f"members/{victim.name}"] or len(changed) == 1, (first, second)
    fresh = tmp_path / "fresh"
    code, out = audit_cli("run", cfg, "--output", fresh, "--set", "reports=[]")
    assert code == 0 and (fresh / "scores.csv").read_text() == (run / "scores.csv").read_text()


# --------------------------------------------------------------------------- validate before loading
@pytest.mark.parametrize(
    "over, culprit",
    [
        ({"attacks": [{"plugin": "variaton-similarity"}]}, "attacks[0].plugin"),
        ({"attacks": [{**VS, "params": {"t": 100, "k": 50, "n": 1, "bogus": 1}}]}, "bogus"),
        ({"data": {"members": "/nonexistent/folder", "nonmembers": "/nonexistent/other"}}, "/nonexistent/folder"),
        ({"reports": [{"plugin": "no-such-report"}]}, "reports[0].plugin"),
        ({"reports": [{"plugin": "html-report", "params": {"nope": 1}}]}, "nope"),
        ({"run": {"executor": {"plugin": "no-such-executor"}}}, "run.executor.plugin"),
    ],
)
def test_bad_input_is_refused_before_the_target_loads(toy, audit_cli, tmp_path, monkeypatch, over, culprit):
    built = []
    real = ToyTarget.__init__
    monkeypatch.setattr(ToyTarget, "__init__", lambda self, *a, **k: built.append(1) or real(self, *a, **k))
    code, out = audit_cli("run", toy(**over), "--output", tmp_path / "run")
    assert code == 2 and culprit in out and one_paragraph_error(out), out
    assert not built and not (tmp_path / "run").exists()
