"""Bounded memory, honoured precision, one encode per image and clean ids, on the tiny SD folder.

The full-size figures (peak RSS of a 2+2 and a 4+4 audit of 512x512 images, seconds per
component) come from benchmarks/bench_sd.py and are in the plugin's README; these tests check the
mechanisms on the tiny model: chunking changes no score, the estimate is printed and a run that
cannot fit is refused before any weight is read, the dtype used reaches results.json, each image
is encoded once per run whatever the attacks, and manifest ids are not doubled."""

import csv
import json

import numpy as np
import pytest
import torch

import audit_core.plugin.targets as targets
from audit_core.base.errors import ConfigError
from audit_core.plugin.targets import TargetContext
from audit_core.testing import no_traceback
from audit_stable_diffusion import memory
from audit_stable_diffusion.target import SDParams, StableDiffusionTarget

ATTACKS = [
    {"plugin": "rediffuse"},  # the latent defaults: t=10, k=10, n=1, a second variation as reference
    {"plugin": "naive-loss", "params": {"t": 100}},
]


def _config(write_config, model, data, target=None, attacks=ATTACKS, name="sd.yaml"):
    return write_config({
        "run": {"name": "sd-mem", "seed": 0, "device": "cpu", "batch_size": 8},
        "target": {"plugin": "stable-diffusion", "model": str(model), **(target or {})},
        "data": {"members": str(data["members"]), "nonmembers": str(data["nonmembers"]), "limit": 4},
        "attacks": attacks,
        "metrics": {"bootstrap": 20},
        "cache": {"enabled": False},
        "reports": [],
    }, name=name)


def _scores(folder):
    with open(folder / "scores.csv", newline="") as fh:
        return {(r["attack"], r["image_id"]): r["score"] for r in csv.DictReader(fh)}


def test_chunked_vae_and_unet_give_identical_scores(tiny_sd, captioned_data, write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_rediffuse")
    pytest.importorskip("audit_naive_loss")
    runs = {}
    for name, target in (("one", {"max_batch": 1, "vae_batch": 1}), ("all", {"max_batch": 64, "vae_batch": 64})):
        cfg = _config(write_config, tiny_sd, captioned_data, target, name=f"{name}.yaml")
        code, out = audit_cli("run", cfg, "--output", tmp_path / name)
        assert code == 0, out
        # the estimate is printed once the target is built, before the first query
        assert "memory: peak memory about" in out and out.index("memory:") < out.index("rediffuse")
        runs[name] = _scores(tmp_path / name)
        res = json.loads((tmp_path / name / "results.json").read_text())
        assert (res["target"]["max_batch"], res["target"]["vae_batch"]) == (target["max_batch"], target["vae_batch"])
        assert res["target"]["memory"]["peak_gb"] > 0
    # equal to float rounding: oneDNN sums in another order for another batch size (~1e-7 relative)
    assert len(runs["one"]) == 2 * 8 and runs["one"].keys() == runs["all"].keys()
    keys = sorted(runs["one"])
    np.testing.assert_allclose([float(runs["one"][k]) for k in keys], [float(runs["all"][k]) for k in keys], rtol=1e-5, atol=1e-5)


def test_manifest_ids_are_not_doubled(tiny_sd, captioned_data, write_config, audit_cli, tmp_path):
    # captioned_data's members.csv lists `members/00.png`: the id is that, not members/members/00.png
    pytest.importorskip("audit_naive_loss")
    cfg = _config(write_config, tiny_sd, captioned_data, attacks=[{"plugin": "naive-loss", "params": {"t": 100}}])
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    ids = {i for _, i in _scores(tmp_path / "run")}
    assert ids == {f"{g}/{j:02d}.png" for g in ("members", "nonmembers") for j in range(4)}


def test_refused_before_any_weight_is_read(tiny_sd, captioned_data, write_config, audit_cli, tmp_path, monkeypatch):
    def never(self, *a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(StableDiffusionTarget, "_load", never)
    with pytest.raises(ConfigError, match="cannot run within the memory limit"):
        StableDiffusionTarget(SDParams(model=str(tiny_sd), memory_limit=0.5), TargetContext(device="cpu"))
    # rows asked for that do not fit are refused too, naming the knobs
    big = memory.ROW_BYTES[("vae", 4)] * (512 / 16) ** 2  # one 16x16 VAE row costs 1/1024 of a 512x512 one
    with pytest.raises(ConfigError) as err:
        StableDiffusionTarget(
            SDParams(model=str(tiny_sd), vae_batch=int(4 * 1e9 // big) + 10**4, memory_limit=5.0), TargetContext(device="cpu")
        )
    assert "target.vae_batch" in str(err.value) and "5.0 GB (target.memory_limit)" in str(err.value)
    # through the CLI: exit 2, one paragraph, no traceback, nothing written
    cfg = _config(write_config, tiny_sd, captioned_data, {"memory_limit": 0.5})
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 2 and "cannot run within the memory limit" in out and no_traceback(out), out
    assert not (tmp_path / "run").exists()


def test_auto_rows_follow_the_memory_limit(tiny_sd):
    cpu = torch.device("cpu")
    scale = (16 / 512) ** 2
    unet_row, vae_row = memory.ROW_BYTES[("unet", 4)] * scale, memory.ROW_BYTES[("vae", 4)] * scale
    weights = memory.parameter_count(tiny_sd, ("unet", "vae", "text_encoder")) * 4
    fixed = weights + memory.RUNTIME_BYTES
    for rows in (1, 2):  # room for `rows` rows of the bigger component, not one more
        limit_gb = (fixed + (rows + 0.5) * max(unet_row, vae_row)) / memory.SHARE / 1e9
        p = memory.plan(tiny_sd, 4, cpu, 16, "auto", "auto", limit_gb)
        assert p.peak <= p.limit
        assert p.vae_rows == min(memory.AUTO_CAP["cpu"]["vae"], rows if vae_row >= unet_row else int((rows + 0.5) * unet_row // vae_row))
    with pytest.raises(ConfigError):  # not even one row fits
        memory.plan(tiny_sd, 4, cpu, 16, "auto", "auto", (fixed + 0.5 * max(unet_row, vae_row)) / memory.SHARE / 1e9)
    p = memory.plan(tiny_sd, 4, cpu, 16, "auto", "auto", 100.0)
    assert (p.unet_rows, p.vae_rows) == (memory.AUTO_CAP["cpu"]["unet"], memory.AUTO_CAP["cpu"]["vae"])
    assert p.weights == weights and memory.plan(tiny_sd, 2, cpu, 16, 4, 2, 100.0).weights * 2 == weights  # bf16: half


@pytest.mark.parametrize("native", ["AMX", None])
def test_dtype_used_and_why_reach_results_json(tiny_sd, captioned_data, write_config, audit_cli, tmp_path, monkeypatch, native):
    pytest.importorskip("audit_naive_loss")
    monkeypatch.setattr(targets, "native_bf16", lambda: native)  # a CPU with, and one without, native bf16
    cfg = _config(write_config, tiny_sd, captioned_data, {"dtype": "bf16"}, attacks=[{"plugin": "naive-loss", "params": {"t": 100}}])
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    precision = res["target"]["precision"]
    if native:
        assert precision["dtype"] == "bfloat16" and "natively (AMX)" in precision["reason"]
        assert not any("bf16" in n for n in res["run"]["notes"])
    else:
        assert precision["dtype"] == "float32" and "no native bf16" in precision["reason"]
        assert any(n.startswith("target: dtype bf16 was requested") for n in res["run"]["notes"])
    assert precision["reason"] in out  # and in the terminal


def test_each_image_is_encoded_once_per_run(tiny_sd, captioned_data, write_config, audit_cli, tmp_path, monkeypatch):
    for plugin in ("rediffuse", "naive_loss", "pia", "secmia"):
        pytest.importorskip("audit_" + plugin)
    from diffusers import AutoencoderKL

    rows = []
    original = AutoencoderKL.encode

    def counting(self, x, *a, **k):
        rows.append(int(x.shape[0]))
        return original(self, x, *a, **k)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    attacks = ATTACKS + [{"plugin": "pia", "params": {"t": 100}}, {"plugin": "secmia", "params": {"t_sec": 20, "k": 10}},
                         {"plugin": "rediffuse", "name": "roundtrip", "params": {"latent_reference": "roundtrip"}}]
    cfg = _config(write_config, tiny_sd, captioned_data, attacks=attacks)
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    assert sum(rows) == 8  # 4 members + 4 non-members, once each, for five attacks


def test_cached_latents_are_the_encoded_ones(tiny_sd):
    t = StableDiffusionTarget(SDParams(model=str(tiny_sd), vae_batch=2), TargetContext(device="cpu"))
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    first = t.encode(x)
    again = t.encode(torch.cat([x[3:], x[:3]]))
    assert torch.equal(again, torch.cat([first[3:], first[:3]]))
    fresh = StableDiffusionTarget(SDParams(model=str(tiny_sd), vae_batch=5), TargetContext(device="cpu"))
    assert torch.allclose(fresh.encode(x), first, atol=1e-5)  # chunking changes the latents by float rounding only
