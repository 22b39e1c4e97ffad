import json
import shutil

import pytest
import torch

from audit_core import ddim
from audit_core.base.errors import ModelError
from audit_core.plugin.targets import TargetContext
from audit_core.testing import no_traceback
from audit_stable_diffusion.target import SDParams, StableDiffusionTarget


def load(folder, **kw):
    return StableDiffusionTarget(SDParams(model=str(folder), **kw), TargetContext(device="cpu"))


def test_tiny_folder_loads_with_shapes_and_counts(tiny_sd):
    t = load(tiny_sd)
    assert (t.kind, t.image_size, t.channels, t.num_train_timesteps) == ("latent", 16, 3, 1000)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    z = t.encode(x)
    assert z.shape == (3, 4, 8, 8)
    assert t.eps(z, 10, ["a cat", None, ""]).shape == z.shape and t.stats.nfe == 3
    v = t.variation(x, 20, 10, [[1, 4], [2, 5], [3, 6]], ["a", "b", None])  # n = 2 per image
    assert v.shape == (3, 2, *x.shape[1:]) and v.min() >= -1 and v.max() <= 1  # the VAE's image, clamped
    assert t.stats.nfe == 3 + 6 * 2 and t.stats.queries == 6
    assert torch.allclose(t.variation(x[:1], 20, 10, [[1, 4]], ["a"], clip=True), v[:1], atol=1e-5)  # bounded: clip changes nothing


def test_guidance_doubles_nfe_and_changes_prediction(tiny_sd):
    a, b = load(tiny_sd), load(tiny_sd, guidance_scale=3.0)
    z = torch.randn(2, 4, 8, 8)
    ea, eb = a.eps(z, 500, ["a dog", "a dog"]), b.eps(z, 500, ["a dog", "a dog"])
    assert b.stats.nfe == 4 and a.stats.nfe == 2
    assert not torch.allclose(ea, eb)


def test_captions_condition_the_prediction(tiny_sd):
    t = load(tiny_sd)
    z = torch.randn(1, 4, 8, 8)
    assert not torch.allclose(t.eps(z, 500, ["a red cat"]), t.eps(z, 500, [None]))


def test_variation_matches_diffusers_ddim_scheduler(tiny_sd):
    """The core's DDIM over [t, t-k, ..., k] equals diffusers' DDIMScheduler.step on those steps."""
    from diffusers import DDIMScheduler

    t = load(tiny_sd)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    caps = ["one", "two"]
    z0 = t.encode(x)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    T, tt, k = 1000, 40, 10
    ours = ddim.variation(t.eps_fn(caps), z0, noise, tt, k, t.alphas_cumprod)
    sched = DDIMScheduler.from_pretrained(tiny_sd / "scheduler")
    sched.set_timesteps(T // k)
    z = sched.add_noise(z0, noise, torch.tensor([tt]))
    for step in range(tt, 0, -k):
        z = sched.step(t.eps(z, step, caps), step, z, eta=0.0).prev_sample
    assert (ours - z).abs().max() < 1e-4


def test_not_a_pipeline_missing_tokenizer_and_pickles(tiny_sd, tmp_path):
    with pytest.raises(ModelError, match="not a Stable Diffusion pipeline folder.*unet"):
        (tmp_path / "empty").mkdir() or load(tmp_path / "empty")
    broken = tmp_path / "no-tok"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(ModelError, match="missing tokenizer"):
        load(broken)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_sd, pickled)
    from safetensors.torch import load_file

    sd = load_file(pickled / "unet" / "diffusion_pytorch_model.safetensors")
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(sd, pickled / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelError, match="allow_pickle"):
        load(pickled)
    assert load(pickled, allow_pickle=True).unet is not None


def _config(write_config, model, data, attacks, reports=None, name="sd.yaml", target=None):
    cfg = {
        "run": {"name": "sd", "seed": 0, "device": "cpu", "batch_size": 8},
        "target": {"plugin": "stable-diffusion", "model": str(model), **(target or {})},
        "data": {"members": str(data["members"]), "nonmembers": str(data["nonmembers"])},
        "attacks": attacks,
        "metrics": {"bootstrap": 50},
        "cache": {"enabled": False},
    }
    if reports:
        cfg["reports"] = reports
    return write_config(cfg, name=name)


def test_unreadable_image_is_named(tiny_sd, captioned_data, write_config, audit_cli, tmp_path):
    bad = tmp_path / "bad.csv"
    (tmp_path / "broken.png").write_bytes(b"not a png")
    bad.write_text("path,caption\nbroken.png,a caption\n")
    cfg = _config(write_config, tiny_sd, {"members": bad, "nonmembers": captioned_data["nonmembers"]},
                  [{"plugin": "variation-similarity", "params": {"t": 20, "k": 10, "n": 1}}])
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 2 and "broken.png" in out and no_traceback(out)


def test_all_four_attacks_and_report_with_captions(finetuned_sd, captioned_data, write_config, audit_cli, tmp_path):
    for plugin in ("rediffuse", "secmia", "pia", "naive-loss", "html-report"):
        pytest.importorskip("audit_" + plugin.replace("-", "_"))
    cfg = _config(
        write_config, finetuned_sd, captioned_data,
        [{"plugin": "rediffuse"}, {"plugin": "secmia", "params": {"t_sec": 20, "k": 10}}, {"plugin": "pia"}, {"plugin": "naive-loss"}],
        reports=[{"plugin": "html-report"}],
    )
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(res["attacks"]) == {"rediffuse", "secmia", "pia", "naive-loss"}
    assert res["attacks"]["pia"]["params"]["t"] == 500  # the latent default
    assert res["attacks"]["rediffuse"]["params"]["t"] == 10  # the latent variant's defaults
    markup = 'digit <script>alert("x")</script>'  # the caption of members/00.png
    html = (tmp_path / "run" / "report.html").read_text()
    assert markup not in html
    # the galleries show 12 images per attack, chosen by score: members/00.png may not be among
    # them, so its caption is put on a gallery image and the report rendered again
    res["attacks"]["rediffuse"]["gallery"][0]["caption"] = markup
    (tmp_path / "run" / "results.json").write_text(json.dumps(res))
    code, out = audit_cli("report", tmp_path / "run")
    assert code == 0, out
    html = (tmp_path / "run" / "report.html").read_text()
    assert markup not in html and "digit &lt;script&gt;" in html


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_latent_rediffuse_separates_memorised_members(finetuned_sd, captioned_data, write_config, audit_cli, tmp_path, dtype):
    # bf16 runs bf16 where the CPU computes it natively (else fp32, noted): the scores stay
    # comparable, the AUCs of both precisions are printed with `pytest -s` (README)
    pytest.importorskip("audit_rediffuse")
    cfg = _config(write_config, finetuned_sd, captioned_data,
                  [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 1, "distance": "ssim"}},
                   {"plugin": "naive-loss", "params": {"t": 100, "draws": 4}}], name="sig.yaml", target={"dtype": dtype})
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    auc = res["attacks"]["rediffuse"]["metrics"]["auc"]["value"]
    print(f"latent ReDiffuse AUC on the fine-tuned tiny SD ({res['target']['precision']['dtype']}):", auc,
          "loss AUC:", res["attacks"]["naive-loss"]["metrics"]["auc"]["value"])
    assert auc > 0.75
