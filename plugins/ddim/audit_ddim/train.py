"""Train the demo DDPM (``builtin:digits-ddpm``) on the digits members, on the CPU.

Call :func:`train` from Python or run ``audit ddim train --out DIR``. The result is an ordinary
diffusers pipeline folder (``model_index.json``, ``unet/`` with safetensors, ``scheduler/``) plus
``training.json`` with the recipe, the seed, the wall time and the loss curve, so any diffusers
tool can load it and any run can be reproduced.

The recipe is deliberately plain: a small ``UNet2DModel`` (epsilon prediction), the DDPM linear
schedule (T = 1000, betas 1e-4 .. 0.02), MSE on the noise, AdamW with a short warm-up and a
constant learning rate, no augmentation, no EMA. It is trained **only on the members** for many
epochs so that it memorises them measurably - which is what the audit is meant to detect. One
departure from textbook DDPM, to fit a CPU budget: 80 % of the timestep draws come from 0..249
(where every attack probes) instead of 0..999 (``low_t_fraction = 0`` restores uniform draws).
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import digits


@dataclass
class TrainConfig:
    """Every knob of the recipe; recorded verbatim in ``training.json``."""

    steps: int = 3000
    seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    subset: str = "members"  # the digits subset trained on
    # timestep sampling: uniform over 0..T-1, except that a fraction ``low_t_fraction`` of the
    # draws is uniform over 0..low_t_max-1 instead (0 = the plain DDPM recipe)
    low_t_fraction: float = 0.8
    low_t_max: int = 250
    # the U-Net
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    # the noise schedule (DDPM, linear)
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # bookkeeping
    threads: int = 1  # bit-identical reruns need the same thread count
    log_every: int = 100
    checkpoint_every: int = 0  # 0: only the final model
    sample_count: int = 64
    sample_steps: int = 1000  # ancestral DDPM steps for the sample grid


@dataclass
class TrainResult:
    out: Path
    steps: int
    wall_seconds: float
    final_loss: float
    loss_curve: list[list[float]] = field(default_factory=list)  # [[step, mean loss], ...]


def build_unet(cfg: TrainConfig, image_size: int = digits.SIZE, channels: int = 1):
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=cfg.norm_num_groups,
    )


def build_scheduler(cfg: TrainConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="linear",
        prediction_type="epsilon",
        clip_sample=True,
    )


def save_pipeline(unet, scheduler, out: Path) -> None:
    """Write a diffusers ``DDPMPipeline`` folder with safetensors weights."""
    from diffusers import DDPMPipeline

    out.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out, safe_serialization=True)


@torch.no_grad()
def sample(unet, scheduler, n: int, steps: int, seed: int) -> torch.Tensor:
    """``n`` samples by ancestral DDPM sampling with ``steps`` steps (the scheduler's own
    ``step``; 1000 = the full chain), in [-1, 1]. Ancestral sampling is what the model was trained
    for; deterministic DDIM from pure noise is less forgiving of a small model's errors at high t."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    size, ch = unet.config.sample_size, unet.config.in_channels
    x = torch.randn(n, ch, size, size, generator=gen)
    for t in sched.timesteps:
        e = unet(x, torch.full((n,), int(t), dtype=torch.long)).sample
        x = sched.step(e, t, x, generator=gen).prev_sample
    return x.clamp(-1, 1)


def save_grid(images: torch.Tensor, path: Path, scale: int = 4) -> None:
    """Save ``[N, 1, H, W]`` images in [-1, 1] as one PNG grid (nearest-neighbour upscaled)."""
    import numpy as np
    from PIL import Image

    from audit_core import tensor_to_uint8

    n, _, h, w = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    pad = 1
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=np.uint8)
    arr = np.stack([tensor_to_uint8(im[:1]) for im in images])  # first channel, as a grey level
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = arr[i]
    img = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def _write_record(out: Path, cfg: TrainConfig, step: int, wall: float, curve: list, extra: dict) -> None:
    cpu = time.process_time() - extra["cpu_start"]
    record = {
        "model": "builtin:digits-ddpm recipe (audit_ddim.train)",
        "trained_on": f"builtin:digits/{cfg.subset} ({extra['n_train']} images, 16x16 grayscale)",
        "recipe": asdict(cfg),
        "steps_done": step,
        "epochs_done": round(step * cfg.batch_size / extra["n_train"], 2),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "final_loss": curve[-1][1] if curve else None,
        "loss_curve": curve,
        "parameters": extra["parameters"],
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": cfg.threads,
        },
        "split_manifest": "audit_ddim/demo/digits_split.json (seed %d)" % digits.split()["seed"],
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def train(
    out: str | Path,
    config: TrainConfig | None = None,
    grid: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train the demo DDPM and write it to ``out`` as a diffusers pipeline folder.

    ``overrides`` replace fields of ``config`` (e.g. ``train(out, steps=200)``). ``grid`` is where
    the sample grid PNG goes (default ``out/samples.png``). With ``checkpoint_every = N`` an
    identical pipeline folder (with its own ``training.json``) is written to
    ``out/checkpoint-STEP`` every N steps; with a constant learning rate it equals what
    ``steps = STEP`` would have produced."""
    cfg = config or TrainConfig()
    if overrides:
        cfg = TrainConfig(**{**asdict(cfg), **overrides})
    cfg.block_out_channels = tuple(cfg.block_out_channels)
    out = Path(out)
    log = log or (lambda msg: print(msg, flush=True))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    data = digits.as_tensor(cfg.subset)
    n_train = len(data)
    unet = build_unet(cfg)
    scheduler = build_scheduler(cfg)
    abar = scheduler.alphas_cumprod.to(torch.float32)
    sqrt_ab, sqrt_1m = abar.sqrt(), (1 - abar).sqrt()
    n_params = sum(p.numel() for p in unet.parameters())
    extra = {"n_train": n_train, "parameters": n_params, "cpu_start": time.process_time()}
    log(f"training a {n_params:,}-parameter U-Net on {n_train} images for {cfg.steps} steps -> {out}")

    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    unet.train()
    curve: list[list[float]] = []
    running, count = 0.0, 0
    order = torch.randperm(n_train, generator=gen)
    pos = 0
    start = time.perf_counter()
    for step in range(cfg.steps):
        if pos + cfg.batch_size > n_train:  # a new epoch: reshuffle
            order, pos = torch.randperm(n_train, generator=gen), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        x0 = data[idx]
        t = torch.randint(0, cfg.num_train_timesteps, (len(idx),), generator=gen)
        if cfg.low_t_fraction > 0:
            low = torch.rand(len(idx), generator=gen) < cfg.low_t_fraction
            t = torch.where(low, torch.randint(0, cfg.low_t_max, (len(idx),), generator=gen), t)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1m[t].view(-1, 1, 1, 1) * noise
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        loss = torch.nn.functional.mse_loss(unet(x_t, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        running += loss.item()
        count += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            curve.append([done, round(running / count, 5)])
            running, count = 0.0, 0
            wall = time.perf_counter() - start
            log(f"step {done}/{cfg.steps}  loss {curve[-1][1]:.4f}  {wall:.0f}s")
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            ck = out / f"checkpoint-{done}"
            unet.eval()
            save_pipeline(unet, scheduler, ck)
            _write_record(ck, cfg, done, time.perf_counter() - start, curve, extra)
            unet.train()
    wall = time.perf_counter() - start
    unet.eval()
    save_pipeline(unet, scheduler, out)
    _write_record(out, cfg, cfg.steps, wall, curve, extra)
    grid_path = Path(grid) if grid else out / "samples.png"
    save_grid(sample(unet, scheduler, cfg.sample_count, cfg.sample_steps, cfg.seed), grid_path)
    log(f"done in {wall:.0f}s; model in {out}, samples in {grid_path}")
    return TrainResult(out=out, steps=cfg.steps, wall_seconds=wall, final_loss=curve[-1][1] if curve else math.nan, loss_curve=curve)
