"""Images/s of the in-process executor and of the Ray executor with 1 and 2 workers.

    python benchmarks/bench_executor.py [--images 128] [--device cpu] [--json OUT]

Runs ReDiffuse (t=200, k=100, n=10; the variation-similarity example attack if rediffuse is not
installed) on the demo model `builtin:digits-ddpm`, cache disabled, and appends a dated row to
benchmarks/RESULTS.md. Ray's start-up is excluded (a local Ray is started before timing)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _results import append_result  # benchmarks/_results.py (this script's folder)

ROOT = Path(__file__).resolve().parents[1]


def config(images: int, device: str, executor: dict | None) -> str:
    from audit_core.plugin import manager as plugins

    attack = (
        {"plugin": "rediffuse", "params": {"t": 200, "k": 100, "n": 10}}
        if "rediffuse" in plugins.registry("attacks")
        else {"plugin": "variation-similarity", "params": {"t": 200, "k": 100, "n": 10}}
    )
    cfg = {
        "run": {"name": "bench-executor", "seed": 0, "device": device, "batch_size": 32},
        "target": {"plugin": "ddim", "model": "builtin:digits-ddpm"},
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": images // 2},
        "attacks": [attack],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 0},
    }
    if executor:
        cfg["run"]["executor"] = executor
    return yaml.safe_dump(cfg)


def measure(images: int, device: str, executor: dict | None) -> float:
    from audit_core.base.config import load_config_text
    from audit_core.run.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_config_text(config(images, device, executor), "bench.yaml", ROOT)
        runner = Runner(loaded, output=Path(tmp) / "run")
        t0 = time.perf_counter()
        runner.run()
        return images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    import ray
    import torch

    ray.init(num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), include_dashboard=False, log_to_driver=False)
    gpus = 1 if args.device.startswith("cuda") else 0
    rows = {"inprocess": measure(args.images, args.device, None)}
    threads = torch.get_num_threads()
    for workers in (1, 2):
        # on the CPU the cores are shared out: workers x torch threads = the driver's threads
        # (oversubscribing them only adds contention); scores are then equal to within float
        # rounding rather than bit-identical (that needs the driver's thread count, the default)
        per = max(1, threads // workers) if not gpus else threads
        rows[f"ray x{workers} ({per} thr)"] = measure(
            args.images, args.device,
            {"plugin": "ray", "workers": workers, "gpus_per_worker": gpus / workers if gpus else 0, "torch_threads": per},
        )
    ray.shutdown()
    print(f"{'executor':<18} {'images/s':>9}")
    for k, v in rows.items():
        print(f"{k:<18} {v:9.2f}")
    out = {"device": args.device, "images": args.images, "cpu_count": os.cpu_count(), "images_per_s": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if not args.no_record:
        cells = ", ".join(f"{k} {v:.2f} img/s" for k, v in rows.items())
        append_result("bench_executor", f"{args.device}, {args.images} images, {os.cpu_count()} cores", cells)


if __name__ == "__main__":
    sys.exit(main())
