"""End to end: ``audit serve`` as a subprocess on a free loopback port with a bearer token, over
the ddim target; ReDiffuse through the ``http`` target must give the in-process run's AUC (within
0.02: the only difference is the 8-bit PNG of each variation), the server must answer 401 without
the token, and the token must appear nowhere in the run directory or the server's log.

Two models: a tiny random diffusers DDPM saved by the test (always), and the embedded demo model
``builtin:digits-ddpm`` on the digits data (skipped until audit-ddim ships it; another digits
model folder can stand in: AUDIT_HTTP_DEMO_MODEL=/path)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("audit_rediffuse", reason="the end-to-end test runs ReDiffuse (audit-rediffuse)")
pytest.importorskip("audit_ddim", reason="the end-to-end test serves the ddim target (audit-ddim)")

TOKEN = "e2e-Tk-5c1b0f3e9a7d44c2"
TOKEN_VAR = "AUDIT_HTTP_E2E_TOKEN"
DEMO_N = 50  # demo images per group
#: another digits model folder (e.g. a training checkpoint) may stand in for the demo model
DEMO_MODEL = os.environ.get("AUDIT_HTTP_DEMO_MODEL", "builtin:digits-ddpm")


def demo_missing() -> str | None:
    try:
        from audit_ddim import loading

        path = loading.resolve_model_path(DEMO_MODEL)
        if not (path / "model_index.json").exists():
            return f"{DEMO_MODEL} is not a diffusers pipeline folder"
    except Exception as exc:  # noqa: BLE001
        return f"the demo model is not available: {exc}"
    return None


def save_tiny_pipeline(folder: Path) -> Path:
    """A random tiny UNet2DModel (3x8x8, T=500) + DDPMScheduler as a DDPMPipeline folder."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )
    scheduler = DDPMScheduler(num_train_timesteps=500, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder, safe_serialization=True)
    return folder


class AuditServe:
    """``audit serve`` in a subprocess; ``url`` once it listens."""

    def __init__(self, model: str, log: Path):
        env = {**os.environ, TOKEN_VAR: TOKEN, "AUDIT_LOAD_PLUGINS": "ddim,http", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        cmd = [
            sys.executable, "-m", "audit_core.cli", "serve", "--target", "ddim", "--model", model,
            "--port", "0", "--token-env", TOKEN_VAR, "--device", "cpu", "--max-batch", "32",
        ]
        self.log = log
        self.out = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while True:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"audit serve did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@pytest.fixture(params=["tiny", "demo"])
def setup(request, tmp_path, image_folder):
    """(model, data mapping, attack params) of one model."""
    if request.param == "demo":
        why = demo_missing()
        if why:
            pytest.skip(why)
        data = {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": DEMO_N}
        return DEMO_MODEL, data, {"t": 200, "k": 100, "n": 10}
    model = str(save_tiny_pipeline(tmp_path / "tiny-ddpm"))
    data = {
        "members": str(image_folder("members", n=20, channels=3, seed=1)),
        "nonmembers": str(image_folder("nonmembers", n=20, channels=3, seed=2)),
    }
    return model, data, {"t": 100, "k": 50, "n": 4}


def test_rediffuse_through_audit_serve_matches_in_process(setup, tmp_path, write_config, audit_cli, monkeypatch):
    model, data, params = setup
    server = AuditServe(model, tmp_path / "serve.log")
    try:
        # without the token (or with a wrong one): 401, before anything is computed
        assert httpx.get(server.url + "/", timeout=30).status_code == 401
        r = httpx.post(server.url + "/v1/variations", json={"images": []}, timeout=30)
        assert r.status_code == 401 and TOKEN not in r.text
        assert httpx.get(server.url + "/", headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 401
        status = httpx.get(server.url + "/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
        assert status["target"] == "ddim" and TOKEN not in json.dumps(status)

        def run(name: str, target: dict):
            cfg = {
                "run": {"name": name, "seed": 0, "device": "cpu", "batch_size": 50},
                "target": target,
                "data": data,
                # clip: the server's 8-bit PNGs are always within [-1, 1]; clip the local run's
                # variations too, so that only the 8-bit quantisation differs
                "attacks": [{"plugin": "rediffuse", "params": {**params, "clip": True}}],
                "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
                "metrics": {"bootstrap": 100},
            }
            out = tmp_path / name
            code, output = audit_cli("run", write_config(cfg, f"{name}.yaml"), "--output", out)
            return code, output, out

        # an http run without the token is refused (exit 2), naming the fix
        code, output, _ = run("no-token", {"plugin": "http", "url": server.url})
        assert code == 2 and "401" in output and "token_env" in output

        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        t0 = time.perf_counter()
        code, output, remote = run("remote", {"plugin": "http", "url": server.url, "token_env": TOKEN_VAR, "concurrency": 4})
        remote_s = time.perf_counter() - t0
        assert code == 0, output
    finally:
        server.stop()
    t0 = time.perf_counter()
    code, output, local = run("local", {"plugin": "ddim", "model": model})
    local_s = time.perf_counter() - t0
    assert code == 0, output

    r_res, l_res = (json.loads((d / "results.json").read_text()) for d in (remote, local))
    ra, la = r_res["attacks"]["rediffuse"], l_res["attacks"]["rediffuse"]
    auc_r, auc_l = ra["metrics"]["auc"]["value"], la["metrics"]["auc"]["value"]
    print(f"\n{model}: AUC in-process {auc_l:.4f} ({local_s:.1f} s), via audit serve {auc_r:.4f} ({remote_s:.1f} s); "
          f"{r_res['target']['requests']} requests")
    assert abs(auc_r - auc_l) <= 0.02
    assert ra["n_members"] == la["n_members"] and ra["queries_per_image"] == la["queries_per_image"] == params["n"]
    assert ra["nfe_per_image"] == la["nfe_per_image"]  # the server reports its NFEs
    assert r_res["target"]["seeds"].startswith("honoured")
    assert r_res["target"]["server"]["model_id"]

    # the token appears nowhere: run directory (every file, binary or not) and the server's log
    secret = TOKEN.encode()
    files = [p for p in remote.rglob("*") if p.is_file()]
    assert files and not [p for p in files if secret in p.read_bytes()]
    assert secret not in (tmp_path / "serve.log").read_bytes()
    assert TOKEN_VAR in (remote / "config.resolved.yaml").read_text()  # the variable's name is fine
