"""Attack throughput on one GPU against the bare U-Net floor: the paper's CIFAR-10 DDPM U-Net.

    python benchmarks/gpu_check.py [--device auto] [--images 1024] [--batch-size 256|auto]
                                   [--dtypes fp32,fp16] [--channels-last] [--compile]
                                   [--tiny] [--budget 420] [--json OUT]

Builds the 35.7M-parameter pytorch-ddpm U-Net of the papers (ch 128, ch_mult 1,2,2,2, attention
at 16x16, 2 res blocks, 32x32 RGB; ``audit_ddim.pytorch_ddpm.PAPER_CONFIG``) with random weights
as a diffusers pipeline folder (safetensors), loads it through the ddim target like any model,
and for each precision runs ReDiffuse, SecMI, PIA and the loss attack (audit.yaml's params) on
``--images`` random images through the executor's batch path (``execute_batch``: the attack,
the target's DDIM and seeded noise, the per-batch bookkeeping). For every (precision, attack):
img/s, NFE/s, the bare U-Net's NFE/s at the rows per pass the attack used most (``floor``), the
``overhead_ratio`` (the attack's seconds over the floor's for the same NFEs; 1.0 = the bare U-Net) and the
peak GPU memory. Writes everything to ``--json`` (default benchmarks/gpu_check.json).

``--tiny`` shrinks the U-Net and the image count so the script's CPU path runs in seconds (a
check of the script, not a measurement). ``--budget`` seconds: attacks not started by then are
skipped and listed, so a lent GPU's time is never overrun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = yaml.safe_load((ROOT / "audit.yaml").read_text(encoding="utf-8"))["attacks"]
TINY = {"ch": 32, "ch_mult": (1, 2), "attn": (1,), "num_res_blocks": 1, "img_size": 16}


def build_model(folder: Path, tiny: bool) -> dict[str, Any]:
    """A random-weight DDPM pipeline folder of the paper's architecture (or the tiny one)."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from audit_ddim.pytorch_ddpm import PAPER_CONFIG, diffusers_config

    cfg = {**PAPER_CONFIG, **(TINY if tiny else {}), "dropout": 0.0}
    torch.manual_seed(0)
    unet = UNet2DModel(**diffusers_config(cfg))
    sched = DDPMScheduler(num_train_timesteps=cfg["T"], beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder, safe_serialization=True)
    return {"parameters": sum(p.numel() for p in unet.parameters()), "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor_nfe_per_s(target, rows: int, seconds: float = 1.0) -> float:
    """The bare U-Net's forward passes of ``rows`` rows, back to back, in NFE/s."""
    import torch

    x = torch.randn(rows, target.channels, target.image_size, target.image_size, generator=torch.Generator().manual_seed(0))
    x = target._network_input(x)
    steps = torch.full((rows,), 100, device=target.device, dtype=torch.long)
    with torch.no_grad():
        target.unet(x, steps)
        sync(target.device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3:
            target.unet(x, steps)
            n += 1
        sync(target.device)
    return n * rows / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from audit_core.plugin import factory, manager as plugins
    from audit_core.plugin.attacks import AttackContext
    from audit_core.run.batching import resolve_batch_size
    from audit_core.run.executors import WorkBatch, execute_batch
    from audit_core.plugin.targets import TargetContext

    t_start = time.perf_counter()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "torch": torch.__version__,
        "tiny": args.tiny,
        "runs": [],
        "skipped": [],
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        out["model"] = build_model(Path(tmp) / "model", args.tiny)
        tcls = factory.lookup("targets", "ddim")
        distances = plugins.registry("distances")
        for dtype in args.dtypes:
            ctx = TargetContext(device=args.device, dtype=dtype, channels_last=args.channels_last, compile=args.compile)
            target = tcls(tcls.Params(model=str(Path(tmp) / "model"), max_batch=args.max_batch), ctx)
            if target.device.type == "cuda":
                out["gpu"] = torch.cuda.get_device_name(target.device)
            batch, why = resolve_batch_size(args.batch_size, target)
            sizes: list[int] = []  # rows of every eps call during the timed loop
            eps = target.eps

            def counting_eps(z_t, t, captions=None, _eps=eps, _sizes=sizes):
                _sizes.append(int(z_t.shape[0]))
                return _eps(z_t, t, captions)

            target.eps = counting_eps  # instance attribute: the DDIM loops call it too
            gen = torch.Generator().manual_seed(1)
            images = torch.rand(args.images, target.channels, target.image_size, target.image_size, generator=gen) * 2 - 1
            for spec in ATTACKS:
                name = spec["plugin"]
                if time.perf_counter() - t_start > args.budget:
                    out["skipped"].append(f"{dtype}/{name}: over the {args.budget:.0f} s budget")
                    continue
                acls = factory.lookup("attacks", name)
                params = acls.Params.model_validate({**acls.defaults_for(target), **spec.get("params", {})})
                attack = acls(params, target, AttackContext(name=name, seed_key=name, run_seed=0, distances=distances))
                attack.check()
                warm = WorkBatch(index=-1, ids=["warm"], captions=[None], images=images[:1])
                execute_batch(target, attack, warm, 0, name, keep_maps=False)  # kernels, compile, allocator
                if target.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(target.device)
                nfe0 = target.stats.nfe
                sizes.clear()
                sync(target.device)
                t0 = time.perf_counter()
                for i, start in enumerate(range(0, args.images, batch)):
                    chunk = images[start : start + batch]
                    wb = WorkBatch(index=i, ids=[f"img-{j}" for j in range(start, start + len(chunk))], captions=[None] * len(chunk), images=chunk)
                    execute_batch(target, attack, wb, 0, name, keep_maps=False)
                sync(target.device)
                seconds = time.perf_counter() - t0
                nfe = target.stats.nfe - nfe0
                # the floor runs at the rows per pass the attack itself used most (chunked by max_batch)
                rows = max(set(sizes), key=sizes.count) if sizes else batch
                rows = min(rows, target.max_batch())
                floor = floor_nfe_per_s(target, rows)
                out["runs"].append({
                    "dtype": dtype,
                    "precision": target.precision,
                    "attack": name,
                    "images": args.images,
                    "batch_size": batch,
                    "batch_size_reason": why,
                    "nfe_per_image": nfe / args.images,
                    "seconds": round(seconds, 3),
                    "img_per_s": round(args.images / seconds, 1),
                    "nfe_per_s": round(nfe / seconds, 1),
                    "floor_rows_per_pass": rows,
                    "floor_nfe_per_s": round(floor, 1),
                    "overhead_ratio": round(seconds / (nfe / floor), 3),  # 1.0 = as fast as the bare U-Net
                    "peak_memory_mib": round(torch.cuda.max_memory_allocated(target.device) / 2**20, 1) if target.device.type == "cuda" else None,
                })
                print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
            target.close()
            del target
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, help="images per attack (default 1024; 8 with --tiny)")
    ap.add_argument("--batch-size", default="256", help="images per batch, or auto")
    ap.add_argument("--max-batch", type=int, default=2048, help="the ddim target's max_batch (rows per U-Net pass)")
    ap.add_argument("--dtypes", default="fp32,fp16")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="a small U-Net and 8 images: checks the script on the CPU")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining attacks are skipped")
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "gpu_check.json")
    args = ap.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    args.images = args.images or (8 if args.tiny else 1024)
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    os.environ.setdefault("AUDIT_PROGRESS", "0")
    res = run(args)
    text = json.dumps(res, indent=2)
    args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
