"""``audit ddim ...``: commands this plugin adds to the CLI through ``register_commands``.

- ``audit ddim train --out DIR``: train the demo DDPM on the digits members (see ``train.py``);
- ``audit ddim info MODEL``: check a pipeline folder and print what the target would use.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Folder to write the diffusers pipeline (and training.json) to."),
    steps: int = typer.Option(None, "--steps", help="Optimiser steps (default: the demo recipe's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, batches, timesteps and noise."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per step."),
    lr: float = typer.Option(None, "--lr", help="AdamW learning rate (constant after warm-up)."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads."),
    low_t_fraction: float = typer.Option(
        None, "--low-t-fraction", help="Share of timestep draws taken from 0..249 instead of 0..T-1 (0 = plain DDPM)."
    ),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Also save OUT/checkpoint-STEP every N steps."),
    grid: Path = typer.Option(None, "--grid", help="Where to save the sample grid PNG (default OUT/samples.png)."),
) -> None:
    """Train the demo DDPM (builtin:digits-ddpm recipe) on builtin:digits/members."""
    from .train import train as run_training

    overrides = {"seed": seed, "checkpoint_every": checkpoint_every}
    for key, value in {"steps": steps, "batch_size": batch_size, "lr": lr, "threads": threads, "low_t_fraction": low_t_fraction}.items():
        if value is not None:
            overrides[key] = value
    result = run_training(out, grid=grid, log=lambda msg: typer.echo(msg, err=True), **overrides)
    typer.echo(f"wrote {result.out} ({result.steps} steps, {result.wall_seconds:.0f}s, final loss {result.final_loss:.4f})")


@app.command()
def info(
    model: str = typer.Argument(..., help="A diffusers pipeline folder or builtin:digits-ddpm."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Also accept pickled .bin weights."),
) -> None:
    """Load a model folder as the ddim target would, and print its description as JSON."""
    from audit_core import TargetContext

    from .target import DDIMParams, DDIMTarget

    target = DDIMTarget(DDIMParams(model=model, allow_pickle=allow_pickle), TargetContext(device="cpu", config_dir=Path.cwd()))
    typer.echo(json.dumps(target.describe(), indent=2))


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers") from None


@app.command("convert-pytorch-ddpm")
def convert_pytorch_ddpm(
    ckpt: Path = typer.Argument(..., help="A pytorch-ddpm checkpoint (ckpt.pt holding `ema_model`)."),
    out_dir: Path = typer.Argument(..., help="Folder to write the diffusers DDPM pipeline to."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Required: the checkpoint is a pickle (trusted files only)."),
    ch_mult: str = typer.Option("1,2,2,2", "--ch-mult", help="Channel multipliers per level (CIFAR: 1,2,2,2)."),
    attn: str = typer.Option("1", "--attn", help="Levels with self-attention (CIFAR: 1)."),
    num_res_blocks: int = typer.Option(2, "--num-res-blocks"),
    img_size: int = typer.Option(32, "--img-size"),
    beta_1: float = typer.Option(1e-4, "--beta-1"),
    beta_T: float = typer.Option(0.02, "--beta-T"),
) -> None:
    """Convert a pytorch-ddpm checkpoint (the SecMI/PIA/ReDiffuse releases) into a diffusers folder,
    verified against the original architecture to 1e-4."""
    from .pytorch_ddpm import convert

    report = convert(
        ckpt, out_dir, allow_pickle=allow_pickle, beta_1=beta_1, beta_T=beta_T,
        ch_mult=_ints(ch_mult), attn=_ints(attn), num_res_blocks=num_res_blocks, img_size=img_size,
    )
    typer.echo(f"wrote {report['out_dir']} (max |eps difference| vs the original: {report['max_abs_gap']:.2e})")
