"""Reliability, in-process (fast): the bad-input corpus, resume rules, the query cache, secrets,
and a full disk injected into the store and the writers.

The subprocess tests (SIGKILL, Ctrl-C, a real file-size limit, secrets in logs) are in
test_reliability_subprocess.py."""

from __future__ import annotations

import csv
import errno
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from audit_core.base import secrets
from audit_core.data.cache import QueryCache
from audit_core.testing import ToyTarget, no_traceback, write_images

CORPUS = Path(__file__).parent / "bad_inputs"
SECRET = "tok-3f9a-secret-Zq81"


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    secrets.forget_all()


def scores_of(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "scores.csv").open()))


def rows_in(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "state.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]


def refused(audit_cli, out: Path, *args) -> str:
    """Run, expect exit 2 without traceback and without a run directory; return the output."""
    code, output = audit_cli("run", *args, "--output", out)
    assert code == 2, output
    assert no_traceback(output), output
    assert "Error:" in output
    assert not out.exists(), f"{out} was created for an input error"
    return " ".join(output.split())  # rich wraps long lines


# --------------------------------------------------------------------------- the bad-input corpus


def bad_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "bad_members"
    write_images(folder, 3, seed=5)
    for n in names:
        (folder / n).write_bytes((CORPUS / "images" / n).read_bytes())
    return folder


def test_bad_files_fail_listing_every_one(toy, audit_cli, tmp_path):
    names = ["zero-byte.png", "not-an-image.png", "notes.txt", "truncated.png", "bomb.png"]
    folder = bad_folder(tmp_path, *names)
    (folder / "gone.png").symlink_to(tmp_path / "does-not-exist.png")  # dangling: unreadable
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    msg = refused(audit_cli, tmp_path / "out", toy(data={"members": str(folder)}))
    assert "8 bad image file(s)" in msg
    for n in [*names, "gone.png", "loop-a.png", "loop-b.png"]:
        assert str(folder / n) in msg, n
    assert "zero-byte file" in msg and "not an image" in msg and "symlink loop" in msg
    assert "dangling symlink" in msg and "corrupt" in msg and "pixel limit" in msg
    assert "data.on_error: skip" in msg  # says how to go on


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_named(toy, audit_cli, tmp_path):
    folder = bad_folder(tmp_path)
    locked = folder / "locked.png"
    write_images(tmp_path / "x", 1)
    locked.write_bytes((tmp_path / "x" / "img0000.png").read_bytes())
    locked.chmod(0)
    msg = refused(audit_cli, tmp_path / "out", toy(data={"members": str(folder)}))
    assert str(locked) in msg and "unreadable" in msg


def test_on_error_skip_records_skipped_files(toy, audit_cli, tmp_path):
    names = ["zero-byte.png", "not-an-image.png", "truncated.png", "bomb.png"]
    folder = bad_folder(tmp_path, *names)
    out = tmp_path / "out"
    code, output = audit_cli("run", toy(data={"members": str(folder), "on_error": "skip"}), "--output", out)
    assert code == 0, output
    skipped = json.loads((out / "results.json").read_text())["run"]["skipped"]
    assert sorted(Path(s["path"]).name for s in skipped) == sorted(names)
    assert all(s["reason"] and s["group"] == "members" for s in skipped)
    used = {r["path"] for r in scores_of(out)}
    assert not used & {str(folder / n) for n in names} and len(used) == 3 + 6


@pytest.mark.parametrize("group", ["members", "nonmembers"])
def test_empty_sets(toy, audit_cli, tmp_path, group):
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = refused(audit_cli, tmp_path / "out", toy(data={group: str(empty)}))
    assert f"data.{group} ({empty}) is empty" in msg


def test_empty_after_skipping(toy, audit_cli, tmp_path):
    folder = tmp_path / "all_bad"
    folder.mkdir()
    (folder / "zero-byte.png").touch()
    msg = refused(audit_cli, tmp_path / "out", toy(data={"nonmembers": str(folder), "on_error": "skip"}))
    assert "data.nonmembers" in msg and "empty" in msg and "after skipping 1 bad file" in msg


def test_pixel_limit(toy, audit_cli, tmp_path):
    msg = refused(audit_cli, tmp_path / "out", toy(data={"max_pixels": 32}))
    assert "8x8 = 64 pixels exceeds data.max_pixels=32" in msg
    assert str(toy.members / "img0000.png") in msg


def test_decompression_bomb_is_refused_from_the_header(toy, audit_cli, tmp_path):
    """69 bytes claiming 10^10 pixels: refused from the header, never decoded (default limit)."""
    folder = bad_folder(tmp_path, "bomb.png")
    msg = refused(audit_cli, tmp_path / "out", toy(data={"members": str(folder)}))
    assert f"{folder / 'bomb.png'} (exceeds the pixel limit data.max_pixels=64000000" in msg


def test_symlink_loop_to_parent_folder(toy, audit_cli, tmp_path):
    folder = bad_folder(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)
    msg = refused(audit_cli, tmp_path / "out", toy(data={"members": str(folder)}))
    assert "symlink loop" in msg and str(folder / "sub" / "up") in msg
    # not following links ignores the loop
    code, output = audit_cli(
        "run", toy(data={"members": str(folder), "follow_symlinks": False}), "--output", tmp_path / "ok"
    )
    assert code == 0, output


def test_pickled_weights_refused_by_ddim(toy, audit_cli, tmp_path):
    pytest.importorskip("audit_ddim", reason="the ddim plugin (plugins/ddim) is not installed")
    from audit_core.plugin import manager as plugins

    try:
        has_ddim = "ddim" in plugins.registry("targets")
    except Exception as exc:  # another engineer's plugin mid-change
        pytest.skip(f"the ddim plugin does not load: {exc}")
    if not has_ddim:
        pytest.skip("the ddim target is not registered")
    model = CORPUS / "pickled-model"
    msg = refused(audit_cli, tmp_path / "out", toy(target={"plugin": "ddim", "model": str(model)}))
    assert str(model / "unet") in msg and "diffusion_pytorch_model.bin" in msg
    assert "pickled" in msg and "allow_pickle: true" in msg


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"t": 5000, "k": 50}, ["attacks[0].params", "line", "t=5000", "T=1000"]),  # out of range
        ({"t": 100, "k": 30}, ["attacks[0].params", "line", "k=30", "divide t=100"]),  # inconsistent
        ({"n": 0}, ["attacks[0].params.n", "line", "greater than or equal to 1"]),
        ({"distance": "manhattan"}, ["attacks[0].params", "unknown distance 'manhattan'"]),
        ({"t": "late"}, ["attacks[0].params.t", "line", "integer"]),  # wrong type
    ],
)
def test_bad_attack_params(toy, audit_cli, tmp_path, params, expected):
    msg = refused(
        audit_cli, tmp_path / "out", toy(attacks=[{"plugin": "variation-similarity", "params": params}])
    )
    for e in expected:
        assert e in msg, (e, msg)


def test_duplicate_attack_names(toy, audit_cli, tmp_path):
    a = {"plugin": "variation-similarity"}
    msg = refused(audit_cli, tmp_path / "out", toy(attacks=[a, a]))
    assert "attacks[0] and attacks[1] are both named 'variation-similarity'" in msg


@pytest.mark.parametrize(
    "name, expected",
    [
        ("broken.yaml", ["broken.yaml", "line", "broken YAML"]),
        ("unknown-key.yaml", ["unknown-key.yaml", "line 6", "data.colour", "unknown key"]),
        ("wrong-type.yaml", ["wrong-type.yaml", "line 6", "data.limit", "integer"]),
    ],
)
def test_broken_configs(toy, audit_cli, tmp_path, name, expected):
    msg = refused(audit_cli, tmp_path / "out", CORPUS / "configs" / name)
    for e in expected:
        assert e in msg, (e, msg)


def test_wrong_type_from_set(toy, audit_cli, tmp_path):
    msg = refused(audit_cli, tmp_path / "out", toy(), "--set", "run.seed=abc")
    assert "run.seed" in msg and "integer" in msg


def test_missing_folder_and_config(toy, audit_cli, tmp_path):
    msg = refused(audit_cli, tmp_path / "out", toy(data={"nonmembers": str(tmp_path / "nowhere")}))
    assert f"data.nonmembers: {tmp_path / 'nowhere'} does not exist" in msg
    msg = refused(audit_cli, tmp_path / "out", tmp_path / "missing.yaml")
    assert "missing.yaml does not exist" in msg


@pytest.mark.parametrize(
    "section, value, expected",
    [
        ("target", {"plugin": "nope"}, "target.plugin"),
        ("attacks", [{"plugin": "nope-attack"}], "attacks[0].plugin"),
        ("reports", [{"plugin": "nope-report"}], "reports[0].plugin"),
    ],
)
def test_unknown_plugin(toy, audit_cli, tmp_path, section, value, expected):
    msg = refused(audit_cli, tmp_path / "out", toy(**{section: value}))
    assert expected in msg and "line" in msg and "unknown" in msg and "nope" in msg and "installed:" in msg


def test_missing_token_env_var(toy, audit_cli, tmp_path, monkeypatch, register_plugin):
    ensure_toy_slow(register_plugin)
    monkeypatch.delenv("AUDIT_TEST_MISSING_TOKEN", raising=False)
    msg = refused(
        audit_cli, tmp_path / "out", toy(target={"plugin": "toy-slow", "token_env": "AUDIT_TEST_MISSING_TOKEN"})
    )
    assert "target.token_env" in msg and "AUDIT_TEST_MISSING_TOKEN is not set" in msg


def test_secret_value_instead_of_variable_name(toy, audit_cli, tmp_path, register_plugin):
    ensure_toy_slow(register_plugin)
    msg = refused(audit_cli, tmp_path / "out", toy(target={"plugin": "toy-slow", "token_env": "sk-live/abc=="}))
    assert "target.token_env" in msg and "not an environment variable name" in msg


def ensure_toy_slow(register_plugin):
    """The toy-slow target of tests/plugins/audit-toy, registered unless it is installed."""
    from audit_core.plugin import manager as plugins

    if "toy-slow" not in plugins.registry("targets"):
        import importlib.util

        init = Path(__file__).parent / "plugins" / "audit-toy" / "audit_toy" / "__init__.py"
        spec = importlib.util.spec_from_file_location("audit_toy_inline", init)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        register_plugin(mod, name="audit-toy-inline")


# --------------------------------------------------------------------------- resume rules


def test_resume_rules(toy, audit_cli, tmp_path):
    cfg, out = toy(), tmp_path / "run"
    assert audit_cli("run", cfg, "--output", out)[0] == 0
    first = scores_of(out)
    # a finished run resumes to the same scores without recomputing anything
    code, output = audit_cli("run", cfg, "--output", out, "--resume")
    assert code == 0, output
    assert scores_of(out) == first
    # a changed config refuses to resume, and leaves the run untouched
    before = (out / "results.json").read_text()
    code, output = audit_cli("run", cfg, "--output", out, "--resume", "--set", "attacks.0.params.n=3")
    assert code == 2 and no_traceback(output) and "config changed" in output and "--force" in output
    assert (out / "results.json").read_text() == before
    code, output = audit_cli("run", cfg, "--output", out, "--resume", "--set", "run.seed=9")
    assert code == 2
    # report-only changes (reports, metrics, inference, cache, batch size) may resume
    code, output = audit_cli(
        "run", cfg, "--output", out, "--resume", "--set", "metrics.bootstrap=5", "--set", "run.batch_size=5",
        "--set", "reports=[]", "--set", "cache.enabled=true",
    )
    assert code == 0, output
    assert scores_of(out) == first
    # --force discards the old results of a changed config
    code, output = audit_cli("run", cfg, "--output", out, "--resume", "--force", "--set", "attacks.0.params.n=3")
    assert code == 0, output
    assert json.loads((out / "results.json").read_text())["attacks"]["variation-similarity"]["queries_per_image"] == 3
    forced = scores_of(out)
    assert forced != first
    # --force with an unchanged config keeps what was scored (nothing is recomputed)
    (out / "results.json").unlink()
    code, output = audit_cli("run", cfg, "--output", out, "--resume", "--force", "--set", "attacks.0.params.n=3")
    assert code == 0 and scores_of(out) == forced
    assert json.loads((out / "results.json").read_text())["attacks"]["variation-similarity"]["seconds"] > 0


def test_target_model_change_refuses_resume(toy, audit_cli, tmp_path):
    """The fingerprint covers the target's identity (its weights), not only the config text."""
    cfg, out = toy(), tmp_path / "run"
    assert audit_cli("run", cfg, "--output", out)[0] == 0
    code, output = audit_cli("run", cfg, "--output", out, "--resume", "--set", "target.scale=0.7")
    assert code == 2 and "config changed" in output


def test_second_ctrl_c_aborts_the_batch_keeps_the_rest(toy, audit_cli, tmp_path, monkeypatch):
    """A KeyboardInterrupt in the middle of a batch (the second Ctrl-C): exit 130, the batch in
    flight rolled back, the committed ones kept, the resume command printed."""
    cfg = toy()
    ref = tmp_path / "ref"
    assert audit_cli("run", cfg, "--output", ref)[0] == 0
    real_eps, calls = ToyTarget.eps, {"n": 0}

    def eps(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # 2 U-Net calls per batch: inside the third batch
            raise KeyboardInterrupt
        return real_eps(self, *args, **kwargs)

    monkeypatch.setattr(ToyTarget, "eps", eps)
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg, "--output", out, "--set", "run.seed=3")
    text = " ".join(output.split())
    assert code == 130 and no_traceback(output), output
    assert f"Resume with: audit run {cfg} --set run.seed=3 --output {out} --resume" in text
    assert rows_in(out) == 4
    monkeypatch.setattr(ToyTarget, "eps", real_eps)
    assert audit_cli("run", cfg, "--output", out, "--set", "run.seed=3", "--resume")[0] == 0
    assert scores_of(out) == scores_of(ref)


def test_resume_command_masks_secret_overrides():
    from audit_core.cli import _resume_command

    cmd = _resume_command(["audit", "run", "a b.yaml"], ["target.api_key=abc", "target.token_env=T", "run.seed=1"], Path("out"))
    assert cmd == "audit run 'a b.yaml' --set 'target.api_key=***' --set target.token_env=T --set run.seed=1 --output out --resume"


# --------------------------------------------------------------------------- full disk


def test_full_disk_in_the_store_is_resumable(toy, audit_cli, tmp_path, monkeypatch):
    from audit_core.run.store import RunStore

    cfg = toy()
    ref = tmp_path / "ref"
    assert audit_cli("run", cfg, "--output", ref)[0] == 0

    real_add = RunStore.add_batch
    calls = {"n": 0}

    def filling_disk(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:

            def tx():  # what sqlite raises on ENOSPC, inside the store's own write path
                raise sqlite3.OperationalError("database or disk is full")

            return self._write(tx)
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "add_batch", filling_disk)
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg, "--output", out)
    text = " ".join(output.split())
    assert code == 2 and no_traceback(output), output
    assert "disk is full" in text and "--resume" in text and str(out / "state.sqlite") in text
    assert rows_in(out) == 4  # two committed batches of 2, nothing of the third
    assert not (out / "results.json").exists()
    monkeypatch.setattr(RunStore, "add_batch", real_add)

    # an unfinished run is not replaced by accident
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 2 and "unfinished run (4 image score(s) saved)" in " ".join(output.split())
    assert rows_in(out) == 4
    code, output = audit_cli("run", cfg, "--output", out, "--resume")
    assert code == 0, output
    assert scores_of(out) == scores_of(ref)


def test_full_disk_writing_results_is_resumable(toy, audit_cli, tmp_path, monkeypatch):
    from audit_core.run import runner

    cfg, out = toy(), tmp_path / "run"
    real_write = runner.write_text

    def enospc(path, text):
        if path.name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, text)

    monkeypatch.setattr(runner, "write_text", enospc)
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 2 and no_traceback(output) and "disk is full" in output and "--resume" in output
    assert not (out / "results.json").exists() and not list(out.glob(".*.tmp"))
    assert rows_in(out) == 12
    monkeypatch.setattr(runner, "write_text", real_write)

    calls = []
    monkeypatch.setattr(ToyTarget, "eps", lambda self, *a, **k: calls.append(1))  # nothing may be recomputed
    code, output = audit_cli("run", cfg, "--output", out, "--resume")
    assert code == 0, output
    assert not calls and len(scores_of(out)) == 12


def test_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    from audit_core.run.runner import write_text

    p = tmp_path / "results.json"
    p.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_text(p, "new")
    assert p.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))


def test_damaged_state_is_a_clear_error(toy, audit_cli, tmp_path):
    cfg, out = toy(), tmp_path / "run"
    out.mkdir()
    (out / "state.sqlite").write_bytes(b"this is not a database" * 100)
    code, output = audit_cli("run", cfg, "--output", out, "--resume")
    assert code == 2 and no_traceback(output) and "damaged" in output
    assert audit_cli("run", cfg, "--output", out, "--no-resume")[0] == 0  # starting over works


def test_second_writer_is_refused(toy, audit_cli, tmp_path):
    from audit_core.run.store import RunLock

    cfg, out = toy(), tmp_path / "run"
    assert audit_cli("run", cfg, "--output", out)[0] == 0
    lock = RunLock(out).acquire()  # as if another `audit run` were writing there
    try:
        code, output = audit_cli("run", cfg, "--output", out, "--resume")
        assert code == 2 and "another audit process is writing" in " ".join(output.split())
    finally:
        lock.release()


# --------------------------------------------------------------------------- the query cache


def test_second_audit_makes_no_new_queries(toy, audit_cli, tmp_path, monkeypatch):
    served = []
    real = ToyTarget._variation

    def counting(self, x, t, k, seeds, captions):
        served.append(x.shape[0])
        return real(self, x, t, k, seeds, captions)

    monkeypatch.setattr(ToyTarget, "_variation", counting)
    cache_dir = tmp_path / "cache"
    cfg = toy(cache={"enabled": True, "dir": str(cache_dir)})
    a, b = tmp_path / "a", tmp_path / "b"
    assert audit_cli("run", cfg, "--output", a)[0] == 0
    first = json.loads((a / "results.json").read_text())["attacks"]["variation-similarity"]
    assert sum(served) == 12 * 2 == first["spent"]["queries"] and first["cache_hits"] == 0

    served.clear()
    assert audit_cli("run", cfg, "--output", b)[0] == 0  # same target, same data, another run
    second = json.loads((b / "results.json").read_text())["attacks"]["variation-similarity"]
    assert served == []  # the target was not asked once
    assert second["spent"]["queries"] == 0 and second["spent"]["nfe"] == 0
    assert second["cache_hits"] == 24 and second["queries_per_image"] == 2
    # cached answers are exact: identical scores, and identical to a run without the cache
    assert scores_of(a) == scores_of(b)
    c = tmp_path / "c"
    assert audit_cli("run", toy("nocache.yaml"), "--output", c)[0] == 0
    assert [r["score"] for r in scores_of(c)] == [r["score"] for r in scores_of(a)]

    # a new image costs queries only for itself
    write_images(toy.members, 7, seed=1)  # the 6 old files again plus img0006
    served.clear()
    assert audit_cli("run", cfg, "--output", tmp_path / "d")[0] == 0
    assert sum(served) == 2


def test_cache_cap_evicts_least_recently_used(tmp_path):
    value = torch.zeros(1, 8, 8)
    probe = QueryCache(tmp_path / "probe", max_bytes=0)
    probe.put("00" + "0" * 62, value)
    entry = probe.info()["bytes"]
    cache = QueryCache(tmp_path / "c", max_bytes=5 * entry)
    keys = [f"{i:02x}" + "1" * 62 for i in range(10)]
    for i, key in enumerate(keys):
        cache.put(key, value + i)
        os.utime(cache._path(key), (1000 + i, 1000 + i))  # distinct, ordered ages
    present = [k for k in keys if cache._path(k).exists()]
    assert cache.info()["bytes"] <= 5 * entry and cache.evicted >= 5
    assert present == keys[-len(present):]  # the newest survive, the oldest went first

    oldest = present[0]
    assert cache.get(oldest) is not None  # a hit makes it the most recently used...
    assert cache._path(oldest).stat().st_mtime > 10_000
    for i in range(3):
        cache.put(f"{i:02x}" + "2" * 62, value)
    assert cache._path(oldest).exists()  # ...so it outlives entries that are older now
    assert not cache._path(present[1]).exists()
    assert cache.info()["bytes"] <= 5 * entry


def test_cache_cap_in_a_run_and_cache_commands(toy, audit_cli, tmp_path):
    cache_dir = tmp_path / "cache"
    cfg = toy(cache={"enabled": True, "dir": str(cache_dir), "max_bytes": 4000})
    assert audit_cli("run", cfg, "--output", tmp_path / "a")[0] == 0
    info = QueryCache(cache_dir, create=False).info()
    assert 0 < info["bytes"] <= 4000 and info["entries"] < 24

    code, output = audit_cli("cache", "info", "--dir", cache_dir)
    assert code == 0 and f"{info['entries']} entries" in output and str(cache_dir) in " ".join(output.split())
    code, output = audit_cli("cache", "info", "--config", cfg)
    assert code == 0 and f"{info['entries']} entries" in output and "(cap 4.0 kB)" in output
    code, output = audit_cli("cache", "clear", "--config", cfg)
    assert code == 0 and f"removed {info['entries']} cached entries" in output
    assert QueryCache(cache_dir, create=False).info()["entries"] == 0
    code, output = audit_cli("cache", "clear", "--dir", tmp_path / "never-made")
    assert code == 0 and "removed 0" in output and not (tmp_path / "never-made").exists()


def test_cache_env_var_and_broken_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "env-cache"))
    cache = QueryCache()
    assert cache.dir == tmp_path / "env-cache"
    key = "ab" + "3" * 62
    cache.put(key, torch.full((1, 2, 2), 0.1234567))
    assert torch.equal(cache.get(key), torch.full((1, 2, 2), 0.1234567))  # lossless float32
    cache._path(key).write_bytes(b"\x93NUMPY truncated")
    assert cache.get(key) is None  # a damaged entry is a miss, not a crash
    (cache.dir / "ab" / ".audit-tmp-stale.tmp").write_bytes(b"x")  # left by a killed process
    (cache.dir / "ab" / ".user.tmp").write_bytes(b"x")  # not a name the cache writes: kept
    assert cache.clear() == 1 and [p.name for p in cache.dir.rglob("*.tmp")] == [".user.tmp"]


def test_cache_dir_that_cannot_be_created(toy, audit_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    msg = refused(audit_cli, tmp_path / "out", toy(cache={"enabled": True, "dir": str(blocker / "sub")}))
    assert "cache.dir" in msg and str(blocker / "sub") in msg


# --------------------------------------------------------------------------- secrets


def test_secrets_never_written(toy, audit_cli, tmp_path, monkeypatch, register_plugin):
    ensure_toy_slow(register_plugin)
    monkeypatch.setenv("AUDIT_TEST_TOKEN", SECRET)
    cfg = toy(target={"plugin": "toy-slow", "token_env": "AUDIT_TEST_TOKEN", "leak": True})
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 0, output
    assert SECRET not in output
    for p in out.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["target"]["token_env"] == "AUDIT_TEST_TOKEN"  # the name is kept, the value never
    target = json.loads((out / "results.json").read_text())["target"]
    assert target["authorization"] == "***"  # a secret-looking key: redacted
    assert target["endpoint"] == "https://api.example.com/v1?key=***"  # a registered value: scrubbed


def test_redaction_of_literal_secrets():
    from audit_core.base.config import redact

    assert redact({"api_key": "abc", "token_env": "X", "nested": [{"password": "p"}]}) == {
        "api_key": "***", "token_env": "X", "nested": [{"password": "***"}],
    }
    secrets.register_config({"target": {"api_token": "literal-value-1", "tokenizer": "openai/clip", "max_tokens": 1024}})
    assert secrets.scrub("x literal-value-1 y openai/clip 1024") == "x *** y openai/clip 1024"
    for key in ("token", "hf_token", "token_env", "api_key", "password", "authorization", "client_secret"):
        assert secrets.is_secret_key(key), key
    for key in ("tokenizer", "max_tokens", "seed_key", "key", "name"):
        assert not secrets.is_secret_key(key), key
    assert secrets.redact({"hf_token": "abc", "token_env": "HF", "max_tokens": 3}) == {
        "hf_token": "***", "token_env": "HF", "max_tokens": 3,
    }


# --------------------------------------------------------------------------- data checks (unit)


def test_check_file_never_opens_fifos(tmp_path):
    from audit_core.data import check_file

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert check_file(str(fifo), 100) == "not a regular file"


def test_pixel_limit_above_pillows_default(tmp_path):
    """data.max_pixels is the limit, not Pillow's own decompression-bomb threshold."""
    from PIL import Image

    from audit_core.data import check_file

    p = tmp_path / "wide.png"
    Image.fromarray(np.zeros((1, 20), dtype=np.uint8)).save(p)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 5  # stands in for a huge image against Pillow's default
    try:
        assert check_file(str(p), 100) is None
        assert Image.MAX_IMAGE_PIXELS == 5
        assert "exceeds data.max_pixels=10" in check_file(str(p), 10)
    finally:
        Image.MAX_IMAGE_PIXELS = old
