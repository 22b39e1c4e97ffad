"""The `diffusers` generator: `audit reference build` with a tiny SD folder (another model than the
audited one), killed mid-way and resumed, then accepted by `audit run` in copyright mode; and the
same generator behind an AUTOMATIC1111-style /sdapi/v1/txt2img endpoint for the `a1111` client."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest


@pytest.fixture(scope="session")
def generator_sd(tmp_path_factory):
    """Another tiny SD (other random weights): the generator, never the audited model."""
    from audit_stable_diffusion.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("gen") / "generator-sd", seed=1)


def _gen(folder, **kw):
    from audit_stable_diffusion.generator import DiffusersGenerator, DiffusersGeneratorParams

    return DiffusersGenerator(DiffusersGeneratorParams(model=str(folder), steps=3, **kw), "cpu")


def test_generator_is_seeded_per_image_whatever_the_batch(generator_sd):
    g = _gen(generator_sd)
    both = g.generate(["a red cat", "a blue dog"], [11, 12])
    alone = g.generate(["a blue dog"], [12])
    assert np.array_equal(np.asarray(both[1]), np.asarray(alone[0]))
    assert not np.array_equal(np.asarray(g.generate(["a red cat"], [13])[0]), np.asarray(both[0]))
    assert both[0].size == (16, 16) and "generator-sd" in g.describe()


def test_build_killed_midway_resumes_and_copyright_run_accepts_it(tiny_sd, generator_sd, captioned_data, write_config, audit_cli, tmp_path):
    out = tmp_path / "ref"
    env = {**os.environ, "AUDIT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "audit_core.cli", "reference", "build", "--captions", str(captioned_data["members"]),
           "--generator", "diffusers", "--model", str(generator_sd), "--out", str(out), "--per-caption", "2",
           "--param", "steps=8", "--param", "max_batch=1", "--device", "cpu", "--no-cache"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while len(list((out / "images").glob("*.png"))) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert 3 <= len(done) < 32 and not (out / "manifest.csv").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    said = " ".join(rerun.stderr.split())
    assert f"{len(done)} done earlier, {32 - len(done)} generated now" in said, said
    assert {p: (out / "images" / p).stat().st_mtime_ns for p in done} == done  # never regenerated
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 32 and rows[0]["generator"].startswith("diffusers:generator-sd")

    cfg = write_config({
        "run": {"name": "sd-copyright", "seed": 0, "device": "cpu", "batch_size": 16},
        "target": {"plugin": "stable-diffusion", "model": str(tiny_sd)},
        "data": {"suspects": str(captioned_data["members"]), "reference": str(out / "manifest.csv")},
        "attacks": [{"plugin": "naive-loss", "params": {"t": 100}}],
        "metrics": {"bootstrap": 20}, "cache": {"enabled": False}, "reports": [{"plugin": "html-report"}],
    }, name="copyright.yaml")
    code, text = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, text
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    ref = res["reference"]
    print("copyright run on a generated reference: shift-check", ref["shift_check"], "loss AUC",
          res["attacks"]["naive-loss"]["metrics"]["auc"]["value"])
    assert (res["run"]["n_suspects"], res["run"]["n_reference"]) == (16, 32)
    assert ref["generated"] and ref["generator"].startswith("diffusers:generator-sd") and ref["generated_at"]
    assert 0.0 <= ref["shift_check"]["auc"] <= 1.0 and ref["shift_check"]["note"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "diffusers:generator-sd" in html and "Shift check" in html


def test_a1111_client_against_the_served_generator(generator_sd, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("audit_http")
    from fastapi import FastAPI

    from audit_http.testing import LoopbackServer
    from audit_http.txt2img import A1111Generator, A1111Params, mount_txt2img

    local = _gen(generator_sd)
    api = FastAPI()
    mount_txt2img(api, local)
    with LoopbackServer(api) as url:
        remote = A1111Generator(A1111Params(url=url, width=16, height=16), "cpu")
        seed = 2**40 + 5  # sent modulo 2**32, as A1111 seeds are
        img = remote.generate(["a handwritten digit 7"], [seed])[0]
        assert np.array_equal(np.asarray(img), np.asarray(local.generate(["a handwritten digit 7"], [seed % 2**32])[0]))
        assert "generator-sd" in remote.describe() and remote.identity().startswith("a1111:")
        remote.close()
