"""A full-size Stable Diffusion v1.5 folder with random weights, built offline (no download).

    python benchmarks/sd15_folder.py [/tmp/sd15-random]

The real component configs of SD v1.5 (U-Net 859,520,964 parameters, VAE 83,653,863, CLIP ViT-L/14
text encoder 123,060,480) written from the values below, every weight drawn at random (seeded:
the same bytes on every build), saved as fp32 safetensors (4.27 GB), a DDIM scheduler with SD's
betas and a character-level ``CLIPTokenizer`` padded to CLIP's 49,408 tokens. The scores of an
audit on it mean nothing; its cost (seconds, memory) is the real model's.

Built with little memory: each component is constructed on the ``meta`` device (no storage),
then materialised one leaf module at a time (its own ``reset_parameters``, i.e. PyTorch's default
init, as a normal construction would draw), written at its offset in the safetensors file and
freed again, so the build needs well under 1 GB whatever the model's size.
"""

from __future__ import annotations

import json
import string
import struct
import sys
from pathlib import Path

DEFAULT = Path("/tmp/sd15-random")
SEED = 0

UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False, "flip_sin_to_cos": True,
    "freq_shift": 0, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "act_fn": "silu", "norm_num_groups": 32, "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}
SCHEDULER = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
}
PARAMETERS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def _tokenizer_vocab() -> dict[str, int]:
    """Characters (with and without the end-of-word mark), fillers up to 49,406, then CLIP's
    start and end tokens at their real ids 49406 and 49407."""
    vocab: dict[str, int] = {}
    for ch in string.ascii_lowercase + string.digits + ".,!?'-":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    while len(vocab) < 49406:
        vocab[f"<|unused{len(vocab)}|>"] = len(vocab)
    vocab["<|startoftext|>"] = 49406
    vocab["<|endoftext|>"] = 49407
    return vocab


_DTYPES = {"torch.float32": ("F32", 4), "torch.int64": ("I64", 8)}


def write_random_safetensors(module, path: Path, generator_seed: int) -> int:
    """Materialise ``module`` (built on ``meta``) one leaf at a time with its default init and
    stream its state dict to ``path`` as safetensors; returns the number of parameters."""
    import torch

    torch.manual_seed(generator_seed)
    names = list(module.state_dict(keep_vars=True).items())
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in names:
        code, size = _DTYPES[str(t.dtype)]
        n = t.numel() * size
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data aligned to 8 bytes
    start = 8 + len(blob)
    owner = {}  # state-dict name -> (module, attribute)
    for mname, m in module.named_modules():
        for attr, _ in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            owner[f"{mname}.{attr}" if mname else attr] = (m, attr)
    count = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.truncate(start + offset)
        done: set[int] = set()
        for mname, m in module.named_modules():
            own = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
            if not own or id(m) in done:
                continue
            done.add(id(m))
            m.to_empty(device="cpu", recurse=False)
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            else:  # a module holding tensors of its own without an init: small normal, like transformers'
                with torch.no_grad():
                    for _, p in own:
                        p.normal_(0.0, 0.02) if p.is_floating_point() else p.zero_()
            for attr, _ in own:
                key = f"{mname}.{attr}" if mname else attr
                if key not in header:  # a non-persistent buffer
                    continue
                t = getattr(m, attr).detach().contiguous()
                if attr == "position_ids":
                    t = torch.arange(t.shape[-1]).expand(t.shape).contiguous()
                fh.seek(start + header[key]["data_offsets"][0])
                fh.write(t.numpy().tobytes())
                if isinstance(getattr(m, attr), torch.nn.Parameter):
                    count += t.numel()
            m.to_empty(device="meta", recurse=False)  # freed: the file has it
    return count


def build(out: Path = DEFAULT) -> Path:
    """Write the folder to ``out`` (atomically: a temporary sibling renamed at the end)."""
    import shutil

    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out)
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, (sub, make) in enumerate((
        ("unet", lambda: UNet2DConditionModel(**UNET)),
        ("vae", lambda: AutoencoderKL(**VAE)),
        ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**TEXT))),
    )):
        with init_empty_weights(include_buffers=True):
            module = make()
        (tmp / sub).mkdir()
        if sub == "text_encoder":
            module.config.save_pretrained(tmp / sub)
            name = "model.safetensors"
        else:
            module.save_config(tmp / sub)
            name = "diffusion_pytorch_model.safetensors"
        n = write_random_safetensors(module, tmp / sub / name, SEED + i)
        if n != PARAMETERS[sub]:
            raise RuntimeError(f"{sub}: {n:,} parameters, expected {PARAMETERS[sub]:,}")
        print(f"{sub}: {n:,} parameters, {(tmp / sub / name).stat().st_size / 1e9:.2f} GB", flush=True)
        del module
    with torch.device("cpu"):
        CLIPTokenizer(vocab=_tokenizer_vocab(), merges=[], model_max_length=77).save_pretrained(tmp / "tokenizer")
    DDIMScheduler(**SCHEDULER).save_pretrained(tmp / "scheduler")
    (tmp / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def ensure(out: Path = DEFAULT) -> Path:
    """``out`` when it already holds a complete folder, else built there."""
    out = Path(out)
    if (out / "model_index.json").exists():
        return out
    return build(out)


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
