"""Registration through the hooks, the built-in digits dataset, and the training command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audit_core.plugin import manager as plugins
from audit_core.base.errors import DataError
from audit_ddim import digits
from audit_ddim.target import DDIMTarget
from audit_ddim.train import train


def test_hooks_register_the_target_and_the_dataset():
    assert plugins.registry("targets")["ddim"] is DDIMTarget
    assert plugins.registry("datasets")["digits"] is digits.load
    (info,) = [p for p in plugins.get_plugins() if p["name"] == "ddim"]
    assert info["distribution"] == "audit-ddim"
    assert {"register_targets", "register_datasets", "register_commands"} <= set(info["hooks"])


def test_digits_split_is_fixed_disjoint_and_complete():
    members, nonmembers = digits.load("members", {}), digits.load("nonmembers", {})
    assert (len(members), len(nonmembers)) == (898, 899)
    ids_m, ids_n = {r.id for r in members}, {r.id for r in nonmembers}
    assert not ids_m & ids_n and len(ids_m | ids_n) == 1797
    assert {r.id for r in digits.load("all", {})} == ids_m | ids_n
    # the split comes from the shipped manifest, not from a fresh shuffle
    manifest = json.loads(digits.SPLIT_FILE.read_text())
    assert [r.id for r in members] == [f"digits-{i:04d}" for i in manifest["members"]]
    assert all(r.label == 1 for r in members) and all(r.label == 0 for r in nonmembers)


def test_digits_images_are_real_upscaled_digits():
    from sklearn.datasets import load_digits

    rec = digits.load("members", {})[0]
    assert rec.array.dtype == np.uint8 and rec.array.shape == (16, 16) and rec.path is None
    index = int(rec.id.split("-")[1])
    small = load_digits().images[index]
    # upscaled, not replaced: block means of the 16x16 image follow the 8x8 original
    blocks = rec.array.reshape(8, 2, 8, 2).mean(axis=(1, 3))
    assert np.corrcoef(blocks.ravel(), small.ravel())[0, 1] > 0.9
    assert rec.array.max() > 200 and rec.array.min() == 0


def test_unknown_digits_subset_is_a_data_error():
    with pytest.raises(DataError, match="builtin:digits/members"):
        digits.load("train", {})


def test_train_writes_a_loadable_pipeline_with_its_record(tmp_path, load_target):
    out = tmp_path / "model"
    result = train(
        out, steps=3, batch_size=8, block_out_channels=(8, 16), norm_num_groups=4, log_every=1,
        sample_count=4, sample_steps=2, warmup_steps=0, log=None, grid=tmp_path / "grid.png",
    )
    assert result.steps == 3 and len(result.loss_curve) == 3
    record = json.loads((out / "training.json").read_text())
    assert record["recipe"]["steps"] == 3 and record["recipe"]["seed"] == 0
    assert [s for s, _ in record["loss_curve"]] == [1, 2, 3] and record["wall_seconds"] >= 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    target = load_target(out)
    assert (target.channels, target.image_size, target.num_train_timesteps) == (1, 16, 1000)
    assert torch.isfinite(target.eps(torch.zeros(1, 1, 16, 16), 0)).all()


def test_training_is_reproducible_from_its_seed(tmp_path, load_target):
    kw = dict(steps=2, batch_size=4, block_out_channels=(8, 16), norm_num_groups=4, sample_count=1,
              sample_steps=1, log=None)
    train(tmp_path / "a", **kw)
    train(tmp_path / "b", **kw)
    train(tmp_path / "c", **{**kw, "seed": 1})
    ids = [load_target(tmp_path / d).identity() for d in "abc"]
    assert ids[0] == ids[1] != ids[2]


def test_cli_has_the_ddim_commands(audit_cli):
    code, out = audit_cli("ddim", "train", "--help")
    assert code == 0 and "--out" in out and "--steps" in out
    code, out = audit_cli("ddim", "info", "builtin:digits-ddpm")
    assert code == 0 and '"T": 1000' in out


def test_cli_reports_a_bad_model_folder_with_exit_2(audit_cli, tmp_path):
    code, out = audit_cli("ddim", "info", str(tmp_path))
    assert code == 2 and "not a diffusers pipeline" in out and "Traceback" not in out
