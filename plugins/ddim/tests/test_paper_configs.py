"""configs/paper/*.yaml: every one validates against the installed plugins, and the CIFAR-10 one
runs end to end on tiny synthetic CIFAR batches, a published-style split file and a converted
pytorch-ddpm checkpoint (random weights: this checks the plumbing, not the paper's numbers)."""

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from audit_core.plugin import manager as plugins
from audit_core.base.config import load_config

PAPER = Path(__file__).resolve().parents[3] / "configs" / "paper"
CONFIGS = sorted(PAPER.glob("*.yaml"))


def test_there_is_a_config_per_dataset():
    assert {p.stem for p in CONFIGS} == {"cifar10", "cifar100", "stl10", "tiny-imagenet"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_paper_config_validates(path):
    for needed in ("audit_datasets", "audit_rediffuse", "audit_secmia", "audit_pia", "audit_naive_loss", "audit_html_report"):
        pytest.importorskip(needed)
    loaded = load_config(path)
    cfg = loaded.cfg
    assert cfg.target.plugin in plugins.registry("targets")
    assert cfg.data.dataset in plugins.registry("datasets") and cfg.data.split
    attacks = plugins.registry("attacks")
    for i, a in enumerate(cfg.attacks):
        loaded.validate_params(attacks[a.plugin].Params, a.params, ("attacks", i, "params"))
    assert {a.plugin for a in cfg.attacks} == {"naive-loss", "secmia", "pia", "rediffuse"}
    for r in cfg.reports:
        assert r.plugin in plugins.registry("reporters")


def test_cifar10_config_runs_on_synthetic_files(tmp_path, audit_cli):
    pytest.importorskip("audit_datasets")
    from audit_ddim import pytorch_ddpm as pd

    # 5 CIFAR python batches of 8 random 32x32 images; members 0..15, non-members 16..31
    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(1, 6):
        rows = rng.integers(0, 256, size=(8, 3072), dtype=np.uint8)
        with open(root / "cifar-10-batches-py" / f"data_batch_{b}", "wb") as fh:
            pickle.dump({b"data": rows, b"labels": [0] * 8}, fh)
    split = root / "CIFAR10_train_ratio0.5.npz"
    np.savez(split, mia_train_idxs=np.arange(16), mia_eval_idxs=np.arange(16, 32))

    torch.manual_seed(0)
    net = pd.OriginalUNet(1000, 32, (1, 2), (1,), 1, 0.0)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"ema_model": net.state_dict()}, ckpt)
    model = tmp_path / "cifar10-ddpm"
    code, out = audit_cli("ddim", "convert-pytorch-ddpm", ckpt, model, "--ch-mult", "1,2", "--attn", "1",
                          "--num-res-blocks", "1", "--img-size", "32", "--allow-pickle")
    assert code == 0, out

    run = tmp_path / "run"
    code, out = audit_cli(
        "run", PAPER / "cifar10.yaml", "--output", run,
        "--set", f"data.root={root}", "--set", f"data.split={split}", "--set", f"target.model={model}",
        "--set", "run.device=cpu", "--set", "data.limit=10", "--set", "metrics.bootstrap=20", "--set", "cache.enabled=false",
    )
    assert code == 0, out
    results = json.loads((run / "results.json").read_text())
    assert set(results["attacks"]) == {"loss", "secmi-stat", "secmi-nns", "pia", "pian", "rediffuse", "rediffuse-nns"}
    assert results["attacks"]["rediffuse"]["nfe_per_image"] == 20 and results["attacks"]["secmi-stat"]["nfe_per_image"] == 11
    rows = list(csv.DictReader((run / "scores.csv").open()))
    members = {r["image_id"] for r in rows if r["label"] == "member"}
    assert members == {f"cifar10-{i:06d}" for i in range(10)}
    assert (run / "report.html").exists()
