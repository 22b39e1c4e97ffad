"""Reliability against a real ``audit run`` subprocess: SIGKILL mid-run then ``--resume``,
Ctrl-C (SIGINT) then the printed resume command, a real file-size limit (RLIMIT_FSIZE) while the
store writes, and secrets in the run directory and the logs.

What needs a separate process (the kill, the signal, the limit, the reference run and its logs)
runs as one; the follow-up commands (resume, refusals) run in-process through the same CLI entry
point, which keeps this module to four process starts (torch takes seconds to import).

The toy target reaches the subprocess through the test-only plugin tests/plugins/audit-toy
(installed by ``make setup``; when it is not installed, a generated ``.dist-info`` on PYTHONPATH
stands in). ``AUDIT_LOAD_PLUGINS`` limits the subprocess to that plugin and the example attack.

Every score of an interrupted-then-resumed run is compared with an uninterrupted run: identical
``scores.csv`` text (scores are written with ``repr``, so this is bit-for-bit)."""

from __future__ import annotations

import csv
import importlib.metadata as md
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from audit_core.testing import no_traceback, write_images

pytestmark = pytest.mark.slow

TOY_SRC = Path(__file__).parent / "plugins" / "audit-toy"
N_PER_GROUP = 16
ATTACKS = [
    {"plugin": "variation-similarity", "name": "vs-n2", "params": {"t": 100, "k": 50, "n": 2}},
    {"plugin": "variation-similarity", "name": "vs-n1", "params": {"t": 100, "k": 50, "n": 1}},
]
TOTAL = 2 * N_PER_GROUP * len(ATTACKS)  # (attack, image) rows of a finished run
SECRET = "tok-81c2-subprocess-Hj4Q"


@pytest.fixture
def toy_slow(register_plugin):
    """toy-slow in this process too (for in-process resumes), unless installed."""
    from audit_core.plugin import manager as plugins

    if "toy-slow" not in plugins.registry("targets"):
        import importlib.util

        spec = importlib.util.spec_from_file_location("audit_toy_inline", TOY_SRC / "audit_toy" / "__init__.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        register_plugin(mod, name="audit-toy-inline")


def base_env(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "AUDIT_LOAD_PLUGINS": "toy-testing,example-attack",
        "AUDIT_CACHE_DIR": str(root / "default-cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AUDIT_PROGRESS", None)
    try:
        md.distribution("audit-toy")
    except md.PackageNotFoundError:  # not installed by `make setup`: make it discoverable anyway
        dist = root / "site" / "audit_toy-0.1.0.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: audit-toy\nVersion: 0.1.0\n")
        (dist / "entry_points.txt").write_text("[audit]\ntoy-testing = audit_toy\n")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "site"), str(TOY_SRC), env.get("PYTHONPATH")) if p)
    return env


def audit_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "audit_core.cli", *map(str, args)]


def audit(env, *args, timeout=240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(audit_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, **kw)


def start(env, *args) -> subprocess.Popen:
    return subprocess.Popen(audit_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows_in(run_dir: Path) -> int:
    db = run_dir / "state.sqlite"
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
            return c.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    except sqlite3.Error:  # the writer is creating it
        return 0


def wait_rows(proc: subprocess.Popen, run_dir: Path, at_least: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = rows_in(run_dir)
        if n >= at_least:
            return n
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"audit exited ({proc.returncode}) before {at_least} rows were stored:\n{out}\n{err}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"fewer than {at_least} rows after {timeout}s")


def scores_text(run_dir: Path) -> str:
    return (run_dir / "scores.csv").read_text()


def metric_values(run_dir: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())["attacks"]
    return {
        name: ({k: m["value"] for k, m in a["metrics"].items()}, a["nfe_per_image"], a["queries_per_image"])
        for name, a in res.items()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Images, a slow config (batch_size 1, a sleep per U-Net call) and one uninterrupted run."""
    root = tmp_path_factory.mktemp("reliability")
    write_images(root / "members", N_PER_GROUP, seed=11)
    write_images(root / "nonmembers", N_PER_GROUP, seed=12)
    cfg = {
        "run": {"name": "reliability", "seed": 7, "device": "cpu", "batch_size": 1},
        "target": {"plugin": "toy-slow", "delay": 0.02},
        "data": {"members": "members", "nonmembers": "nonmembers"},
        "attacks": ATTACKS,
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 20},
    }
    config = root / "audit.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = base_env(root)
    ref = root / "reference"
    # The sleep does not change any score: the reference skips it to save time. It also resolves
    # an API token from the environment, with a target that (badly) puts it into its description:
    # the secrets test inspects this run's directory and logs. The token changes no score either.
    r = audit(
        {**env, "AUDIT_TEST_TOKEN": SECRET}, "run", config, "--output", ref, "--set", "target.delay=0",
        "--set", "target.token_env=AUDIT_TEST_TOKEN", "--set", "target.leak=true",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list(csv.DictReader(scores_text(ref).splitlines()))) == TOTAL
    return {"root": root, "config": config, "env": env, "ref": ref, "ref_logs": r.stdout + r.stderr}


def resume_in_process(audit_cli, *args) -> str:
    code, output = audit_cli("run", *args)
    assert code == 0, output
    return output


def test_sigkill_mid_run_then_resume_gives_identical_scores(world, tmp_path, audit_cli, toy_slow):
    env, out = world["env"], tmp_path / "run"
    # the killed run uses the query cache: resumed rows served from it must be bit-identical too
    cache = ("--set", "cache.enabled=true", "--set", f"cache.dir={tmp_path / 'cache'}")
    proc = start(env, "run", world["config"], "--output", out, *cache)
    wait_rows(proc, out, at_least=6)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed = rows_in(out)
    assert 0 < killed < TOTAL, killed
    assert not (out / "results.json").exists()

    # a changed config refuses to resume into it (exit 2), touching nothing
    code, output = audit_cli("run", world["config"], "--output", out, "--resume", *cache, "--set", "run.seed=8")
    assert code == 2 and no_traceback(output), output
    assert "config changed" in output and "--force" in output
    assert rows_in(out) == killed

    # report-only changes may resume (metrics.bootstrap changes the CIs, not the scores)
    resume_in_process(audit_cli, world["config"], "--output", out, "--resume", *cache, "--set", "metrics.bootstrap=10")
    assert scores_text(out) == scores_text(world["ref"])
    assert metric_values(out) == metric_values(world["ref"])


def test_ctrl_c_stops_after_the_batch_and_resume_command_works(world, tmp_path, audit_cli, toy_slow):
    env, out = world["env"], tmp_path / "run"
    proc = start(env, "run", world["config"], "--output", out)
    at_signal = wait_rows(proc, out, at_least=TOTAL // 2 + 4)  # inside the second attack
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert no_traceback(stderr), stderr
    assert "stopping after the current batch" in stderr and "Interrupted." in stderr
    stopped = rows_in(out)
    assert at_signal <= stopped < TOTAL
    assert stopped - at_signal <= 3  # the batch in flight (batch_size 1), not the rest

    # the printed command resumes the run
    line = next(ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("audit run "))
    argv = shlex.split(line)
    assert "--resume" in argv and str(out) in argv
    resume_in_process(audit_cli, *argv[2:])
    assert scores_text(out) == scores_text(world["ref"])
    assert metric_values(out) == metric_values(world["ref"])


def _limit_file_size(limit: int):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing

    return apply


def test_file_size_limit_while_writing_is_a_clear_resumable_error(world, tmp_path, audit_cli, toy_slow):
    env, out = world["env"], tmp_path / "run"
    r = audit(
        env, "run", world["config"], "--output", out, "--set", "target.delay=0",
        preexec_fn=_limit_file_size(96 * 1024),  # the store's write-ahead log outgrows it mid-run
    )
    err = " ".join(r.stderr.split())
    assert r.returncode == 2, r.stdout + r.stderr
    assert no_traceback(r.stderr), r.stderr
    assert "state.sqlite" in err and "--resume" in err
    assert "disk is full" in err or "I/O error" in err
    saved = rows_in(out)
    assert 0 < saved < TOTAL, saved
    assert not (out / "results.json").exists()

    resume_in_process(audit_cli, world["config"], "--output", out, "--resume", "--set", "target.delay=0")
    assert scores_text(out) == scores_text(world["ref"])


def test_secret_tokens_never_reach_the_run_directory_or_logs(world):
    """The reference run resolved AUDIT_TEST_TOKEN at run time (and its target leaked it into
    its description): the token is in no file of the run directory and not in the logs."""
    out = world["ref"]
    assert SECRET not in world["ref_logs"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.resolved.yaml", "results.json", "scores.csv", "state.sqlite"}
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), f"the secret leaked into {p}"
    assert "token_env: AUDIT_TEST_TOKEN" in (out / "config.resolved.yaml").read_text()
    target = json.loads((out / "results.json").read_text())["target"]
    assert target["authorization"] == "***" and target["endpoint"].endswith("key=***")
