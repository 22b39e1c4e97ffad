"""A tiny DiT-layout folder built from configs (no download): for tests and for trying the plugin
on a CPU. 16x16 RGB images, 8x8x4 latents, a 2-block DiT with patch size 2 and learned sigma
(8 output channels, like DiT-XL/2), ten classes named after the digits."""

from __future__ import annotations

import json
from pathlib import Path

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def tiny_components(seed: int = 0) -> dict:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=len(DIGITS),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=8, sample_size=16,
    )
    # DiT's schedule: linear betas 1e-4 .. 0.02 over 1000 steps
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False)
    return {"transformer": transformer, "vae": vae, "scheduler": scheduler}


def save_dit_folder(out: str | Path, components: dict, id2label: dict[int, str]) -> Path:
    """Save a DiTPipeline folder (safetensors) with ``id2label`` in model_index.json, where
    ``facebook/DiT-XL-2-256`` keeps it (``save_pretrained`` does not write it)."""
    from diffusers import DiTPipeline

    pipe = DiTPipeline(**components, id2label={int(k): v for k, v in id2label.items()})
    pipe.save_pretrained(out, safe_serialization=True)
    index_path = Path(out) / "model_index.json"
    index = json.loads(index_path.read_text())
    index["id2label"] = {str(k): v for k, v in id2label.items()}
    index_path.write_text(json.dumps(index, indent=2))
    return Path(out)


def build_tiny_dit(out: str | Path, seed: int = 0, components: dict | None = None) -> Path:
    """Write a tiny DiT folder to ``out``; classes 0..9 are named "zero".."nine"."""
    return save_dit_folder(out, components or tiny_components(seed), dict(enumerate(DIGITS)))
