import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from audit_core.base.errors import DataError, ModelError
from audit_core.plugin.targets import TargetContext
from audit_core.testing import no_traceback
from audit_dit.target import DiTParams, DiTTarget


def load(folder, **kw):
    return DiTTarget(DiTParams(model=str(folder), **kw), TargetContext(device="cpu"))


def record(cls=None, rid="members/a.png"):
    return SimpleNamespace(id=rid, path=rid, caption="ignored", extra={} if cls is None else {"class": cls})


def test_tiny_folder_loads_with_shapes_counts_and_learned_sigma_dropped(tiny_dit):
    t = load(tiny_dit)
    assert (t.kind, t.image_size, t.channels, t.num_train_timesteps, t.num_classes) == ("latent", 16, 3, 1000, 10)
    assert t.transformer.config.out_channels == 8 and t.learned_sigma
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    z = t.encode(x)
    assert z.shape == (3, 4, 8, 8)
    e = t.eps(z, 10, ["3", "seven", None])
    raw = t.transformer(z, timestep=torch.full((3,), 10), class_labels=torch.tensor([3, 7, 10])).sample
    assert e.shape == z.shape and torch.allclose(e, raw[:, :4], atol=1e-5)  # the variance half is dropped
    assert t.stats.nfe == 3 + 0
    v = t.variation(x, 20, 10, [[1], [2], [3]], ["1", "2", None])
    assert v.shape == (3, 1, 3, 16, 16) and v.min() >= -1 and v.max() <= 1
    assert t.stats.nfe == 3 + 3 * 2 and t.stats.queries == 3
    assert t.describe()["vae_scaling_factor"] == pytest.approx(0.18215)


def test_class_from_manifest_by_id_or_name_else_class_label_else_null(tiny_dit):
    t = load(tiny_dit)
    assert t.condition(record("7")) == "7" and t.condition(record("seven")) == "7"
    assert t.condition(record()) is None  # the null class; the caption is not a class
    t2 = load(tiny_dit, class_label="three")
    assert t2.condition(record()) == "3" and t2.condition(record("4")) == "4"
    with pytest.raises(DataError, match=r"members/x.png.*'kitten'.*e\.g\. zero"):
        t.condition(record("kitten", rid="members/x.png"))
    with pytest.raises(DataError, match="out of range"):
        t.condition(record("10"))
    z = torch.randn(1, 4, 8, 8)
    assert not torch.allclose(t.eps(z, 500, ["1"]), t.eps(z, 500, [None]))


def test_bad_class_label_is_refused_before_loading(tiny_dit):
    with pytest.raises(DataError, match="target.class_label.*'dog'"):
        load(tiny_dit, class_label="dog")


def test_guidance_doubles_nfe_and_guides_against_the_null_class(tiny_dit):
    a, b = load(tiny_dit), load(tiny_dit, guidance_scale=4.0)
    z = torch.randn(2, 4, 8, 8)
    ea, eb = a.eps(z, 500, ["2", "5"]), b.eps(z, 500, ["2", "5"])
    en = a.eps(z, 500, [None, None])
    assert (a.stats.nfe, b.stats.nfe) == (4, 4)
    assert torch.allclose(eb, en + 4.0 * (ea - en), atol=1e-4)
    assert b.nfe_per_query(20, 10) == 4 and a.nfe_per_query(20, 10) == 2
    assert a.identity() != b.identity()


def test_not_a_pipeline_and_pickles(tiny_dit, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a DiT pipeline folder.*transformer"):
        load(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dit, pickled)
    from safetensors.torch import load_file

    weights = pickled / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(weights)
    weights.unlink()
    torch.save(sd, pickled / "transformer" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelError, match="allow_pickle"):
        load(pickled)
    assert load(pickled, allow_pickle=True).transformer is not None


def test_half_precision_on_the_cpu_runs_fp32_and_says_so(tiny_dit):
    t = load(tiny_dit, dtype="bf16")
    assert t.dtype == torch.float32 and any("bf16" in n for n in t.stats.notes)
    assert next(t.transformer.parameters()).dtype == torch.float32


def _config(write_config, model, data, attacks, name="dit.yaml", **target):
    return write_config({
        "run": {"name": "dit", "seed": 0, "device": "cpu", "batch_size": 8},
        "target": {"plugin": "dit", "model": str(model), **target},
        "data": {"members": str(data["members"]), "nonmembers": str(data["nonmembers"])},
        "attacks": attacks,
        "metrics": {"bootstrap": 50},
        "cache": {"enabled": False},
    }, name=name)


def test_unknown_class_in_the_manifest_is_named_before_any_query(tiny_dit, classed_data, write_config, audit_cli, tmp_path):
    bad = tmp_path / "bad.csv"
    src = classed_data["members"].read_text().splitlines()
    bad.write_text(src[0] + "\n" + src[1].rsplit(",", 1)[0].replace("members/", f"{classed_data['members'].parent}/members/") + ",kitten\n")
    cfg = _config(write_config, tiny_dit, {"members": bad, "nonmembers": classed_data["nonmembers"]}, [{"plugin": "naive-loss"}])
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 2 and "kitten" in out and "00.png" in out and no_traceback(out)
    assert not (tmp_path / "run").exists()


def test_all_four_attacks_run_unchanged_with_nfe_counted(finetuned_dit, classed_data, write_config, audit_cli, tmp_path):
    for plugin in ("rediffuse", "secmia", "pia", "naive-loss"):
        pytest.importorskip("audit_" + plugin.replace("-", "_"))
    cfg = _config(
        write_config, finetuned_dit, classed_data,
        [{"plugin": "rediffuse"}, {"plugin": "secmia", "params": {"t_sec": 20, "k": 10}}, {"plugin": "pia"}, {"plugin": "naive-loss"}],
    )
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(res["attacks"]) == {"rediffuse", "secmia", "pia", "naive-loss"}
    assert res["target"]["plugin"] == "dit" and res["target"]["learned_sigma"] is True
    assert res["attacks"]["rediffuse"]["params"]["t"] == 10  # the latent variant's defaults
    assert res["attacks"]["rediffuse"]["nfe_per_image"] == 2.0  # 2n variations of t/k = 1 DDIM step
    assert res["attacks"]["naive-loss"]["nfe_per_image"] >= 1.0
    assert res["attacks"]["secmia"]["nfe_per_image"] > res["attacks"]["pia"]["nfe_per_image"] > 0


def test_latent_rediffuse_separates_memorised_members(finetuned_dit, classed_data, write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_rediffuse")
    cfg = _config(write_config, finetuned_dit, classed_data,
                  [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 1, "distance": "ssim", "latent_reference": "roundtrip"}},
                   {"plugin": "rediffuse", "name": "rediffuse-pairs", "params": {"t": 100, "k": 50, "n": 1, "distance": "ssim"}},
                   {"plugin": "naive-loss", "params": {"t": 100, "draws": 4}}], name="sig.yaml")
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    auc = res["attacks"]["rediffuse"]["metrics"]["auc"]["value"]
    ft = json.loads((finetuned_dit / "finetune.json").read_text())
    print("latent ReDiffuse AUC on the fine-tuned tiny DiT (roundtrip reference):", auc,
          "(two-draw pairs):", res["attacks"]["rediffuse-pairs"]["metrics"]["auc"]["value"], "loss AUC:",
          res["attacks"]["naive-loss"]["metrics"]["auc"]["value"], "fine-tune:", ft)
    assert auc > 0.75
