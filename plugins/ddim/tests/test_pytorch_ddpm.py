"""The pytorch-ddpm converter: noise predictions of both implementations agree to 1e-4."""

import pytest
import torch

from audit_core.base.errors import ModelError
from audit_ddim import pytorch_ddpm as pd

SMALL = {"ch": 32, "ch_mult": (1, 2), "attn": (1,), "num_res_blocks": 1, "dropout": 0.0, "T": 1000, "img_size": 8}


def small_original(seed=0, cfg=SMALL):
    torch.manual_seed(seed)
    net = pd.OriginalUNet(cfg["T"], cfg["ch"], cfg["ch_mult"], cfg["attn"], cfg["num_res_blocks"], 0.0)
    with torch.no_grad():  # random (not default-initialised) weights everywhere, biases included
        for name, p in net.named_parameters():
            if name == "time_embedding.timembedding.0.weight":
                continue  # the fixed sinusoid table
            p.copy_(torch.randn_like(p) * (0.2 if p.ndim > 1 else 0.5))
    return net.eval()


@pytest.mark.parametrize("attn", [(1,), (0,)])
def test_converted_unet_matches_original(attn):
    cfg = {**SMALL, "attn": attn}
    original = small_original(cfg=cfg)
    unet = pd.to_diffusers(original.state_dict(), cfg)
    gap = pd.max_prediction_gap(original, unet, cfg, n=6, seed=1)
    assert gap < 1e-4, gap
    # and not trivially: the outputs are far from zero and depend on t
    x = torch.randn(2, 3, 8, 8)
    e1 = unet(x, torch.tensor([10, 10])).sample
    e2 = unet(x, torch.tensor([900, 900])).sample
    assert e1.abs().mean() > 0.1 and (e1 - e2).abs().max() > 1e-3


def test_convert_cli_writes_a_loadable_pipeline(tmp_path, audit_cli):
    original = small_original()
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"ema_model": original.state_dict(), "step": 5}, ckpt)
    out = tmp_path / "converted"
    code, text = audit_cli("ddim", "convert-pytorch-ddpm", ckpt, out, "--ch-mult", "1,2", "--attn", "1",
                           "--num-res-blocks", "1", "--img-size", "8")
    assert code == 2 and "allow-pickle" in text  # refused without the opt-in
    code, text = audit_cli("ddim", "convert-pytorch-ddpm", ckpt, out, "--ch-mult", "1,2", "--attn", "1",
                           "--num-res-blocks", "1", "--img-size", "8", "--allow-pickle")
    assert code == 0, text
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    from audit_core.plugin.targets import TargetContext
    from audit_ddim.target import DDIMParams, DDIMTarget

    target = DDIMTarget(DDIMParams(model=str(out)), TargetContext(device="cpu"))
    x = torch.randn(2, 3, 8, 8)
    t = 123
    want = original(x, torch.full((2,), t))
    assert (target.eps(x, t) - want).abs().max() < 1e-4
    assert torch.allclose(target.alphas_cumprod, torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0))


def test_wrong_layout_is_a_model_error(tmp_path):
    ckpt = tmp_path / "other.pt"
    torch.save({"ema_model": {"foo.weight": torch.zeros(2)}}, ckpt)
    with pytest.raises(ModelError):
        pd.convert(ckpt, tmp_path / "x", allow_pickle=True)
