"""Checkpoints of the original DDPM U-Net in the pytorch-ddpm layout (the format the SecMI, PIA and
ReDiffuse authors release: ``ckpt.pt`` with ``ema_model`` weights; T = 1000, linear betas
1e-4 .. 0.02), converted into a diffusers ``UNet2DModel`` pipeline folder.

``OriginalUNet`` re-states that architecture (module names match the checkpoints' keys) so the
conversion can be verified: both networks get the same random inputs and their noise predictions
must agree to 1e-4.

Differences bridged by the conversion:
- the sinusoidal time embedding is interleaved (sin f0, cos f0, sin f1, ...) in the original and
  concatenated (sin ..., cos ...) in diffusers: the first time-embedding layer's input columns are
  permuted; the frequencies match with ``freq_shift = 0``;
- 1x1-convolution attention projections become linear layers (weights squeezed);
- a single attention head (``attention_head_dim`` = the block width).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from audit_core import ModelError

PAPER_CONFIG = {"ch": 128, "ch_mult": (1, 2, 2, 2), "attn": (1,), "num_res_blocks": 2, "dropout": 0.1, "T": 1000, "img_size": 32}


# --- the original architecture ------------------------------------------------------------------


class _Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class _TimeEmbedding(nn.Module):
    def __init__(self, T: int, d_model: int, dim: int):
        super().__init__()
        freqs = torch.exp(-math.log(10000) * torch.arange(0, d_model, 2).float() / d_model)
        angles = torch.arange(T).float()[:, None] * freqs[None, :]
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(T, d_model)  # interleaved
        self.timembedding = nn.Sequential(
            nn.Embedding.from_pretrained(table), nn.Linear(d_model, dim), _Swish(), nn.Linear(dim, dim)
        )

    def forward(self, t):
        return self.timembedding(t)


class _Down(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.main = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, temb):
        return self.main(x)


class _Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.main = nn.Conv2d(ch, ch, 3, stride=1, padding=1)

    def forward(self, x, temb):
        return self.main(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Attn(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(32, ch)
        self.proj_q = nn.Conv2d(ch, ch, 1)
        self.proj_k = nn.Conv2d(ch, ch, 1)
        self.proj_v = nn.Conv2d(ch, ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.group_norm(x)
        q = self.proj_q(y).permute(0, 2, 3, 1).reshape(b, h * w, c)
        k = self.proj_k(y).reshape(b, c, h * w)
        v = self.proj_v(y).permute(0, 2, 3, 1).reshape(b, h * w, c)
        weights = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=-1)
        out = torch.bmm(weights, v).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return x + self.proj(out)


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int, dropout: float, attn: bool):
        super().__init__()
        self.block1 = nn.Sequential(nn.GroupNorm(32, cin), _Swish(), nn.Conv2d(cin, cout, 3, 1, 1))
        self.temb_proj = nn.Sequential(_Swish(), nn.Linear(tdim, cout))
        self.block2 = nn.Sequential(nn.GroupNorm(32, cout), _Swish(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, 1, 1))
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.attn = _Attn(cout) if attn else nn.Identity()

    def forward(self, x, temb):
        h = self.block1(x) + self.temb_proj(temb)[:, :, None, None]
        h = self.block2(h) + self.shortcut(x)
        return self.attn(h)


class OriginalUNet(nn.Module):
    """The DDPM U-Net of Ho et al. as laid out by pytorch-ddpm (keys match its checkpoints)."""

    def __init__(self, T=1000, ch=128, ch_mult=(1, 2, 2, 2), attn=(1,), num_res_blocks=2, dropout=0.1, in_ch=3):
        super().__init__()
        tdim = ch * 4
        self.time_embedding = _TimeEmbedding(T, ch, tdim)
        self.head = nn.Conv2d(in_ch, ch, 3, 1, 1)
        self.downblocks = nn.ModuleList()
        chs, now = [ch], ch
        for i, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.downblocks.append(_Res(now, ch * mult, tdim, dropout, i in attn))
                now = ch * mult
                chs.append(now)
            if i != len(ch_mult) - 1:
                self.downblocks.append(_Down(now))
                chs.append(now)
        self.middleblocks = nn.ModuleList([_Res(now, now, tdim, dropout, True), _Res(now, now, tdim, dropout, False)])
        self.upblocks = nn.ModuleList()
        for i, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.upblocks.append(_Res(chs.pop() + now, ch * mult, tdim, dropout, i in attn))
                now = ch * mult
            if i != 0:
                self.upblocks.append(_Up(now))
        self.tail = nn.Sequential(nn.GroupNorm(32, now), _Swish(), nn.Conv2d(now, in_ch, 3, 1, 1))

    def forward(self, x, t):
        temb = self.time_embedding(t)
        h = self.head(x)
        hs = [h]
        for layer in self.downblocks:
            h = layer(h, temb)
            hs.append(h)
        for layer in self.middleblocks:
            h = layer(h, temb)
        for layer in self.upblocks:
            if isinstance(layer, _Res):
                h = torch.cat([h, hs.pop()], dim=1)
            h = layer(h, temb)
        return self.tail(h)


# --- conversion ---------------------------------------------------------------------------------


def diffusers_config(cfg: dict[str, Any]) -> dict[str, Any]:
    levels = range(len(cfg["ch_mult"]))
    return {
        "sample_size": cfg["img_size"],
        "in_channels": cfg.get("in_ch", 3),
        "out_channels": cfg.get("in_ch", 3),
        "block_out_channels": tuple(cfg["ch"] * m for m in cfg["ch_mult"]),
        "layers_per_block": cfg["num_res_blocks"],
        "down_block_types": tuple("AttnDownBlock2D" if i in cfg["attn"] else "DownBlock2D" for i in levels),
        "up_block_types": tuple("AttnUpBlock2D" if i in cfg["attn"] else "UpBlock2D" for i in reversed(levels)),
        "attention_head_dim": None,  # one head as wide as the block
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "flip_sin_to_cos": False,
        "freq_shift": 0,
        "dropout": cfg.get("dropout", 0.0),
        "downsample_padding": 1,
    }


def _res_keys(src: str, dst: str) -> dict[str, str]:
    pairs = {"block1.0": "norm1", "block1.2": "conv1", "temb_proj.1": "time_emb_proj", "block2.0": "norm2", "block2.3": "conv2", "shortcut": "conv_shortcut"}
    return {f"{src}.{a}": f"{dst}.{b}" for a, b in pairs.items()}


def _attn_keys(src: str, dst: str) -> dict[str, str]:
    pairs = {"group_norm": "group_norm", "proj_q": "to_q", "proj_k": "to_k", "proj_v": "to_v", "proj": "to_out.0"}
    return {f"{src}.{a}": f"{dst}.{b}" for a, b in pairs.items()}


def key_map(cfg: dict[str, Any]) -> dict[str, str]:
    """Module-prefix map from pytorch-ddpm names to diffusers UNet2DModel names."""
    m = {"head": "conv_in", "tail.0": "conv_norm_out", "tail.2": "conv_out",
         "time_embedding.timembedding.1": "time_embedding.linear_1", "time_embedding.timembedding.3": "time_embedding.linear_2"}
    n_levels, nrb, attn = len(cfg["ch_mult"]), cfg["num_res_blocks"], cfg["attn"]
    idx = 0
    for i in range(n_levels):
        for j in range(nrb):
            m.update(_res_keys(f"downblocks.{idx}", f"down_blocks.{i}.resnets.{j}"))
            if i in attn:
                m.update(_attn_keys(f"downblocks.{idx}.attn", f"down_blocks.{i}.attentions.{j}"))
            idx += 1
        if i != n_levels - 1:
            m[f"downblocks.{idx}.main"] = f"down_blocks.{i}.downsamplers.0.conv"
            idx += 1
    m.update(_res_keys("middleblocks.0", "mid_block.resnets.0"))
    m.update(_attn_keys("middleblocks.0.attn", "mid_block.attentions.0"))
    m.update(_res_keys("middleblocks.1", "mid_block.resnets.1"))
    idx = 0
    for u, i in enumerate(reversed(range(n_levels))):
        for j in range(nrb + 1):
            m.update(_res_keys(f"upblocks.{idx}", f"up_blocks.{u}.resnets.{j}"))
            if i in attn:
                m.update(_attn_keys(f"upblocks.{idx}.attn", f"up_blocks.{u}.attentions.{j}"))
            idx += 1
        if i != 0:
            m[f"upblocks.{idx}.main"] = f"up_blocks.{u}.upsamplers.0.conv"
            idx += 1
    return m


def convert_state_dict(sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    prefixes = key_map(cfg)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "time_embedding.timembedding.0.weight":
            continue  # the fixed sinusoid table; diffusers computes it
        module, _, leaf = key.rpartition(".")
        if module not in prefixes:
            raise ModelError(f"unexpected key {key!r} in the checkpoint: not the pytorch-ddpm U-Net layout for this config")
        new = f"{prefixes[module]}.{leaf}"
        if module == "time_embedding.timembedding.1" and leaf == "weight":
            value = torch.cat([value[:, 0::2], value[:, 1::2]], dim=1)  # interleaved -> [sin, cos]
        if value.ndim == 4 and value.shape[-2:] == (1, 1) and any(s in new for s in (".to_q.", ".to_k.", ".to_v.", ".to_out.0.")):
            value = value[:, :, 0, 0]
        out[new] = value.detach().clone().contiguous()
    return out


def infer_config(sd: dict[str, torch.Tensor], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = dict(PAPER_CONFIG if defaults is None else defaults)
    if "head.weight" in sd:
        cfg["ch"] = int(sd["head.weight"].shape[0])
        cfg["in_ch"] = int(sd["head.weight"].shape[1])
    if "time_embedding.timembedding.0.weight" in sd:
        cfg["T"] = int(sd["time_embedding.timembedding.0.weight"].shape[0])
    return cfg


def to_diffusers(sd: dict[str, torch.Tensor], cfg: dict[str, Any]):
    from diffusers import UNet2DModel

    unet = UNet2DModel(**diffusers_config(cfg))
    missing, unexpected = unet.load_state_dict(convert_state_dict(sd, cfg), strict=False)
    if missing or unexpected:
        raise ModelError(f"conversion incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return unet.eval()


@torch.no_grad()
def max_prediction_gap(original: nn.Module, unet, cfg: dict[str, Any], n: int = 4, seed: int = 0) -> float:
    """Largest |eps_original - eps_diffusers| on random inputs and random timesteps."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.get("in_ch", 3), cfg["img_size"], cfg["img_size"], generator=gen)
    t = torch.randint(0, cfg["T"], (n,), generator=gen)
    return float((original.eval()(x, t) - unet(x, t).sample).abs().max())


def load_checkpoint(path: Path, allow_pickle: bool, key: str = "ema_model") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    if not allow_pickle:
        raise ModelError(
            f"{path} is a pickle checkpoint (torch.save). Unpickling can execute code from the file, so it "
            f"is refused by default: pass --allow-pickle (or allow_pickle: true) only for files you trust."
        )
    warnings.warn(f"loading the pickle checkpoint {path} (allow_pickle): only do this for trusted files", stacklevel=2)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # restricted unpickler as a second guard
    except Exception as exc:
        raise ModelError(f"cannot load {path}: {exc}") from None
    if isinstance(ckpt, dict) and key in ckpt:
        ckpt = ckpt[key]
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ModelError(f"{path} holds no `{key}` state dict of the pytorch-ddpm U-Net")
    return ckpt


def convert(ckpt: Path, out_dir: Path, allow_pickle: bool = False, beta_1: float = 1e-4, beta_T: float = 0.02,
            tolerance: float = 1e-4, **overrides: Any) -> dict[str, Any]:
    """Convert ``ckpt`` into a diffusers DDPM pipeline folder at ``out_dir`` (safetensors) and
    verify it against the original architecture. Returns a report."""
    from diffusers import DDPMPipeline, DDPMScheduler

    sd = load_checkpoint(Path(ckpt), allow_pickle)
    cfg = infer_config(sd)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    unet = to_diffusers(sd, cfg)  # raises ModelError on keys of another layout
    original = OriginalUNet(cfg["T"], cfg["ch"], tuple(cfg["ch_mult"]), tuple(cfg["attn"]), cfg["num_res_blocks"], 0.0, cfg.get("in_ch", 3))
    try:
        original.load_state_dict(sd)
    except RuntimeError as exc:
        raise ModelError(f"{ckpt} does not match the pytorch-ddpm U-Net for {cfg}: {str(exc)[:300]}") from None
    gap = max_prediction_gap(original, unet, cfg)
    if gap > tolerance:
        raise ModelError(f"converted U-Net disagrees with the original by {gap:.2e} (> {tolerance:g}); not written")
    sched = DDPMScheduler(num_train_timesteps=cfg["T"], beta_start=beta_1, beta_end=beta_T, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(out_dir, safe_serialization=True)
    return {"out_dir": str(out_dir), "max_abs_gap": gap, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}
