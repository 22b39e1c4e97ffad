"""The Ray executor gives the same scores as the in-process executor, even when a worker dies."""

import csv
import json
import os
import signal
import subprocess
import threading
import time

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("audit_ddim")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A small random diffusers DDPM pipeline folder (1 channel, 8x8)."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )
    folder = tmp_path_factory.mktemp("pipe") / "tiny-ddpm"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder


@pytest.fixture
def config(tiny_pipeline, image_folder, write_config):
    def make(n_images=12, **executor):
        cfg = {
            "run": {"name": "ray", "seed": 11, "device": "cpu", "batch_size": 3},
            "target": {"plugin": "ddim", "model": str(tiny_pipeline)},
            "data": {"members": str(image_folder("m", n=n_images, seed=1)), "nonmembers": str(image_folder("n", n=n_images, seed=2))},
            "attacks": [{"plugin": "variation-similarity", "params": {"t": 100, "k": 20, "n": 2}}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
        }
        if executor:
            cfg["run"]["executor"] = {"plugin": "ray", **executor}
        return write_config(cfg, name=f"audit-{len(executor)}-{n_images}.yaml")

    return make


def scores(run_dir):
    with open(run_dir / "scores.csv") as fh:
        return {r["image_id"]: float(r["score"]) for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module (the executor reuses a running Ray and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_two_workers_identical_scores(config, audit_cli, tmp_path, ray_session):
    code, out = audit_cli("run", config(), "--output", tmp_path / "local")
    assert code == 0, out
    code, out = audit_cli("run", config(workers=2, cpus_per_worker=1), "--output", tmp_path / "ray")
    assert code == 0, out
    a, b = scores(tmp_path / "local"), scores(tmp_path / "ray")
    assert len(a) == 24 and a == b
    res = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert res["run"]["executor"]["plugin"] == "ray" and res["run"]["executor"]["workers"] == 2


def _worker_pids():
    out = subprocess.run(["pgrep", "-f", "ray::_Worker"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_killed_worker_run_completes_with_identical_scores(config, audit_cli, tmp_path, ray_session):
    code, out = audit_cli("run", config(n_images=20), "--output", tmp_path / "local")
    assert code == 0, out
    killed = []

    def killer():
        import sqlite3

        state = tmp_path / "ray" / "state.sqlite"
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            try:
                n = sqlite3.connect(state).execute("SELECT count(*) FROM scores").fetchone()[0] if state.exists() else 0
            except sqlite3.Error:
                n = 0
            pids = _worker_pids()
            if n >= 3 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    code, out = audit_cli("run", config(n_images=20, workers=2, cpus_per_worker=1), "--output", tmp_path / "ray")
    th.join(timeout=5)
    assert code == 0, out
    assert killed, "no worker was killed mid-run (the run finished too fast?)"
    assert scores(tmp_path / "local") == scores(tmp_path / "ray")
