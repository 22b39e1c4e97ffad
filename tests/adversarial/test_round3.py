"""The adversarial pass of issue 34 (item 6) over the runner, the data and the outputs: each case
lost data, gave a silently wrong result, hung, crashed, or failed late, before its fix. The
`audit serve` cases are in test_serve_security.py, the http target's in test_http_answers.py."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit_core.testing import ToyTarget, no_traceback


def one_line(output: str) -> str:
    return " ".join(output.split())


def refused_up_front(audit_cli, monkeypatch, *args) -> str:
    """Exit 2, one paragraph, no traceback, and the target (its model) never built."""
    built = []
    real = ToyTarget.__init__
    monkeypatch.setattr(ToyTarget, "__init__", lambda self, *a, **k: built.append(1) or real(self, *a, **k))
    code, out = audit_cli("run", *args)
    assert code == 2 and no_traceback(out), out
    assert not built, "the model was loaded before the input was refused"
    return one_line(out)


def scores(run: Path) -> dict[str, str]:
    return {(r["attack"], r["image_id"]): r["score"] for r in csv.DictReader((run / "scores.csv").open(encoding="utf-8"))}


# --------------------------------------------------------------------------- data loss
def test_no_resume_never_deletes_through_a_linked_artifacts_folder(toy, audit_cli, tmp_path):
    """A run directory whose ``artifacts/`` was replaced by a link to the user's folder (holding
    files of the same names): ``--no-resume`` deleted the user's files through the link. Now the
    run directory is refused (exit 2) and nothing is deleted."""
    run = tmp_path / "run"
    code, out = audit_cli("run", toy(), "--output", run)
    assert code == 0, out
    listed = [f for f in json.loads((run / ".audit-run.json").read_text())["files"] if f.startswith("artifacts/")]
    assert listed
    theirs = tmp_path / "my-photos"
    (run / "artifacts").rename(theirs)  # the user's folder now holds files at the listed places
    (run / "artifacts").symlink_to(theirs, target_is_directory=True)
    before = sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*"))
    for flag in ("--no-resume", "--force"):
        code, out = audit_cli("run", toy(), "--output", run, flag)
        assert code == 2 and "symbolic link" in one_line(out) and no_traceback(out), out
    assert sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*")) == before


# --------------------------------------------------------------------------- silently wrong
def test_output_inside_the_members_folder_is_refused(toy, audit_cli, tmp_path, monkeypatch):
    """``--output`` inside ``data.members``: the second run read the first run's gallery PNGs as
    members (more members, different scores, exit 0)."""
    out = refused_up_front(audit_cli, monkeypatch, toy(), "--output", toy.members / "run")
    assert "inside data.members" in out
    assert not (toy.members / "run").exists()


def copyright_cfg(toy, write_config, image_folder, **inference):
    suspects = image_folder("suspects", n=4, seed=5)
    reference = image_folder("reference", n=12, seed=6)
    return write_config({
        "run": {"name": "cr", "seed": 1, "device": "cpu", "batch_size": 4},
        "target": {"plugin": "toy"},
        "data": {"suspects": str(suspects), "reference": str(reference)},
        "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 2}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 20},
        "inference": {"max_queries": 10_000, "undecided": 0.99, "permutations": 99, **inference},
    })


def test_resume_after_changing_stage2_factor_is_refused(toy, write_config, image_folder, audit_cli, tmp_path):
    """``--resume`` after changing ``inference.stage2_factor`` kept the stage-2 scores made with
    the old factor (the fingerprint leaves ``inference`` out). Now refused, naming the setting;
    ``--no-resume`` scores again with the new factor."""
    cfg, run = copyright_cfg(toy, write_config, image_folder), tmp_path / "run"
    code, out = audit_cli("run", cfg, "--output", run)
    assert code == 0, out
    assert json.loads((run / "results.json").read_text())["set_inference"]["combined"]["two_stage"]["stage2_ran"]
    code, out = audit_cli("run", cfg, "--output", run, "--resume", "--set", "inference.stage2_factor=3")
    assert code == 2 and no_traceback(out), out
    assert "inference.stage2_factor" in one_line(out) and "made with 2" in one_line(out)
    code, out = audit_cli("run", cfg, "--output", run, "--resume")  # unchanged: fine
    assert code == 0, out
    code, out = audit_cli("run", cfg, "--output", run, "--no-resume", "--set", "inference.stage2_factor=3")
    assert code == 0, out
    fresh = tmp_path / "fresh"
    assert audit_cli("run", cfg, "--output", fresh, "--set", "inference.stage2_factor=3")[0] == 0
    assert scores(run) == scores(fresh)


def test_resume_after_changing_calibration_fraction_with_adaptive_n_is_refused(toy, audit_cli, tmp_path):
    """``--resume`` after changing ``inference.calibration_fraction`` with rediffuse ``n: auto``
    kept the stopping rule fitted on the old split (and the held-out scores made with it)."""
    cfg = toy(attacks=[{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": "auto", "max_n": 4}}],
              inference={"calibration_fraction": 0.5})
    run = tmp_path / "run"
    code, out = audit_cli("run", cfg, "--output", run)
    assert code == 0, out
    code, out = audit_cli("run", cfg, "--output", run, "--resume", "--set", "inference.calibration_fraction=0.4")
    assert code == 2 and no_traceback(out) and "inference.calibration_fraction" in one_line(out), out
    # a setting the run's scores do not depend on still changes freely
    code, out = audit_cli("run", cfg, "--output", run, "--resume", "--set", "inference.alpha=0.05")
    assert code == 0, out


# --------------------------------------------------------------------------- hangs and crashes
def test_an_absurd_bootstrap_is_refused_up_front(toy, audit_cli, monkeypatch, tmp_path):
    """``metrics.bootstrap: 10**12`` was accepted: the run sat in the bootstrap with memory
    growing. Now exit 2 before the model loads."""
    t0 = time.monotonic()
    out = refused_up_front(audit_cli, monkeypatch, toy(metrics={"bootstrap": 10**12}), "--output", tmp_path / "r")
    assert "metrics.bootstrap" in out and "100000" in out
    assert time.monotonic() - t0 < 30


def test_a_cache_entry_of_another_shape_is_a_miss(toy, audit_cli, tmp_path, caplog):
    """A query-cache entry with a valid header and checksum but another shape was served, and the
    run failed blaming the attack. Now a miss with a note: recomputed, replaced, same scores."""
    from audit_core.data.cache import QueryCache, encode_entry

    cache = tmp_path / "cache"
    cfg = toy(cache={"enabled": True, "dir": str(cache)})
    code, out = audit_cli("run", cfg, "--output", tmp_path / "cold")
    assert code == 0, out
    entries = QueryCache(cache).files()
    assert entries
    for p in entries:  # each entry re-written, valid, as a 3 x 4 array
        key = p.name[: -len(".qc")]
        p.write_bytes(encode_entry(key, np.zeros((3, 4), np.float32)))
    code, out = audit_cli("run", cfg, "--output", tmp_path / "warm")
    assert code == 0, out
    assert "shape [3, 4], expected [1, 8, 8]" in caplog.text
    assert scores(tmp_path / "warm") == scores(tmp_path / "cold")


def odd_names(folder: Path) -> list[str]:
    """Images under hostile names: not UTF-8, a newline, markup, a spreadsheet formula."""
    src = sorted(folder.glob("*.png"))
    names = [b"caf\xe9-latin1.png", b"two\nlines.png", b"<script>alert(1)<\\script>.png", b"=HYPERLINK(\"http:x\",\"y\").png"]
    for p, name in zip(src, names):
        os.rename(os.fsencode(p), os.path.join(os.fsencode(folder), name))
    return names


def test_hostile_file_names_come_out_escaped(toy, audit_cli, tmp_path):
    """A non-UTF-8 file name crashed the run (SQLite and the UTF-8 outputs refuse lone
    surrogates); a newline, ``<script>`` or ``=HYPERLINK(...)`` came out raw in scores.csv (a
    formula a spreadsheet runs). Now: ids hold the undecodable bytes as ``\\xNN``, scores.csv
    cells are inert, results.json is valid JSON and report.html escapes the markup."""
    odd_names(toy.members)
    run = tmp_path / "run"
    code, out = audit_cli("run", toy(), "--output", run)
    assert code == 0, out
    text = (run / "scores.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 12 and len(text.splitlines()) == 13  # no raw newline: one line per row
    ids = {r["image_id"] for r in rows}
    assert "members/caf\\xe9-latin1.png" in ids and "members/two\\x0alines.png" in ids
    assert "members/<script>alert(1)<\\script>.png" in ids  # CSV needs no markup escaping
    assert all(not (c.startswith(("=", "+", "-", "@"))) for r in rows for c in (r["image_id"], r["path"]))
    assert any(r["path"].endswith('=HYPERLINK("http:x","y").png') for r in rows)  # inside a path: not a formula
    res = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert res["attacks"]
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html
    # a formula at the start of a cell (the id under a manifest with an `id` column)
    (tmp_path / "m.csv").write_text("path,id\n" + "\n".join(f"{p},=cmd|{i}" for i, p in enumerate(sorted(toy.nonmembers.glob("*.png")))))
    code, out = audit_cli("run", toy(data={"members": str(toy.members), "nonmembers": str(tmp_path / "m.csv")}),
                          "--output", tmp_path / "m")
    assert code == 0, out
    cells = [r["image_id"] for r in csv.DictReader((tmp_path / "m" / "scores.csv").open(encoding="utf-8"))]
    assert "nonmembers/=cmd|0" in cells  # the group prefix keeps it inert already
    from audit_core.stats.results import csv_cell

    assert [csv_cell(s) for s in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "ok", "a=b")] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "\\x09x", "ok", "a=b"]


@pytest.mark.parametrize("which", ["results.json", "config.resolved.yaml"])
def test_audit_report_on_a_deeply_nested_file_is_a_clear_error(toy, audit_cli, tmp_path, which):
    """``audit report`` on a run whose results.json or config.resolved.yaml nests 100,000 deep
    died with RecursionError (exit 1, a traceback). Now exit 2 naming the file."""
    run = tmp_path / "run"
    assert audit_cli("run", toy(), "--output", run)[0] == 0
    deep = "[" * 100_000 + "]" * 100_000
    if which == "results.json":
        (run / which).write_text('{"attacks": {"a": ' + deep + "}}")
    else:
        (run / which).write_text("reports: " + deep + "\n")
    code, out = audit_cli("report", run)
    assert code == 2 and no_traceback(out) and which in out, out


# --------------------------------------------------------------------------- smaller
def test_an_animated_gif_is_refused_not_audited_as_its_first_frame(toy, audit_cli, monkeypatch, tmp_path):
    p = sorted(toy.members.glob("*.png"))[0]
    frames = [Image.open(p).convert("L"), Image.new("L", (8, 8), 255)]
    frames[0].save(p.with_suffix(".gif"), save_all=True, append_images=frames[1:], duration=100)
    p.unlink()
    out = refused_up_front(audit_cli, monkeypatch, toy(), "--output", tmp_path / "r")
    assert "GIF with 2 frames" in out and p.with_suffix(".gif").name in out


def test_a_manifest_listing_one_file_twice_is_refused(toy, audit_cli, monkeypatch, tmp_path):
    files = sorted(toy.members.glob("*.png"))
    lines = ["path,id"] + [f"{p},m{i}" for i, p in enumerate(files)] + [f"{files[0].parent}/./{files[0].name},again"]
    (tmp_path / "members.csv").write_text("\n".join(lines) + "\n")
    out = refused_up_front(audit_cli, monkeypatch, toy(data={"members": str(tmp_path / "members.csv"), "nonmembers": str(toy.nonmembers)}),
                           "--output", tmp_path / "r")
    assert f"line {len(files) + 2}: names the same file as line 2" in out


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_cache_dir_overlapping_the_output_is_refused(toy, audit_cli, monkeypatch, tmp_path, where):
    """``cache.dir`` equal to or inside ``--output``: the second run refused its own folder
    ("not a run directory") after the first had filled it."""
    run = tmp_path / "run"
    cache = {"same": run, "inside": run / "cache", "around": tmp_path}[where]
    out = refused_up_front(audit_cli, monkeypatch, toy(cache={"enabled": True, "dir": str(cache)}), "--output", run)
    assert "cache.dir" in out and "overlap" in out


def test_output_under_a_regular_file_is_refused_before_the_model_loads(toy, audit_cli, monkeypatch, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    out = refused_up_front(audit_cli, monkeypatch, toy(), "--output", tmp_path / "notes.txt" / "run")
    assert "notes.txt is a file, not a folder" in out


def test_a_fresh_run_that_cannot_write_does_not_suggest_resume(toy, audit_cli, monkeypatch, tmp_path):
    """A fresh run whose first write failed said "run again with --resume", though nothing was
    committed (and --resume then complained)."""
    import audit_core.run.runner as runner

    def fail(path, text):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runner, "write_text", fail)
    code, out = audit_cli("run", toy(), "--output", tmp_path / "run")
    assert code == 2 and no_traceback(out), out
    assert "--resume" not in out and "Nothing was scored yet" in one_line(out)


@pytest.mark.parametrize("key, value, text, expected", [
    ("run.seed", True, "true", "run.seed"), ("run.seed", 1.0, "1.0", "run.seed"), ("run.seed", 1.5, "1.5", "run.seed"),
    ("inference.alpha", float("nan"), ".nan", "finite number"),
    ("inference.calibration_fraction", float("nan"), ".nan", "finite number"),
    ("inference.undecided", float("inf"), ".inf", "finite number"),
])
def test_config_values_that_were_read_wrong(toy, audit_cli, monkeypatch, tmp_path, key, value, text, expected):
    """``run.seed: true`` and ``1.0`` were taken as 1; ``inference.alpha: .nan`` got "greater
    than 0". Both in the YAML and in ``--set``."""
    section, name = key.split(".")
    out = refused_up_front(audit_cli, monkeypatch, toy(**{section: {name: value}}), "--output", tmp_path / "r")
    assert key in out and expected in out
    out = refused_up_front(audit_cli, monkeypatch, toy(), "--output", tmp_path / "r", "--set", f"{key}={text}")
    assert key in out and expected in out
