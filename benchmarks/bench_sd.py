"""Stable Diffusion v1.5 at full size on this machine: seconds and peak memory per component.

    python benchmarks/bench_sd.py [--folder /tmp/sd15-random] [--dtypes fp32,bf16]
                                  [--unet-batches 1,2,4] [--vae-batches 1,2] [--json OUT] [--no-record]

Builds the full-size random-weight SD v1.5 folder when ``--folder`` holds none
(``benchmarks/sd15_folder.py``: real component configs, seeded random weights, 4.27 GB of fp32
safetensors, nothing downloaded), then, for each dtype and each component, in a fresh process
(peak RSS is per process):

- loads the folder with the ``stable-diffusion`` target (the audit's own loading path) and
  records the resident memory after loading (``loaded_gb``: weights + runtime) and the peak while
  loading (``loading_peak_gb``: fp32 files loaded as bf16 hold both copies of a component);
- runs the component at each batch size, ascending: the U-Net at t=500 on 64x64x4 latents with
  the empty prompt's embedding (one NFE per row), the VAE encoder on 512x512 images, the decoder
  on 64x64x4 latents (after one warm-up call at batch 1 for the U-Net; the VAE calls are long
  enough that their first call is representative). Per row: ``s_per_row`` (wall seconds),
  ``cpu_s_per_row`` (CPU seconds of all the process's threads) and ``quiet_s_per_row`` =
  CPU seconds / torch threads: what the call takes on a machine nobody else uses. On a shared
  machine (``load_avg``, the 1-minute load average during the call, above the core count) wall
  seconds grow with the other processes' load; the CPU seconds hardly do;
- ``peak_gb``: the process's peak RSS during that batch (``VmHWM``, reset after loading), ``act_gb_per_row`` =
  (peak - loaded) / rows: the activation memory a row adds. The target's memory estimate
  (``audit_stable_diffusion.memory``) uses these figures.

Prints a markdown table (the one in plugins/stable-diffusion/README.md), writes ``--json`` and
appends a row to benchmarks/RESULTS.md. The scores of this model mean nothing; its cost is the
real SD v1.5's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sd15_folder import DEFAULT, ensure  # noqa: E402


def _rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _peak_gb() -> float:
    """The process's peak resident memory since the last :func:`_reset_peak` (Linux ``VmHWM``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _reset_peak() -> None:
    """Reset the peak to the current resident memory (``/proc/self/clear_refs`` 5): loading, which
    converts fp32 files to bf16 and peaks higher than a pass, must not hide the passes' peaks."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def measure(folder: str, dtype: str, component: str, batches: list[int]) -> dict:
    """One process: load the target, run ``component`` at each batch size (ascending)."""
    import torch

    from audit_core.plugin.targets import TargetContext
    from audit_stable_diffusion.target import SDParams, StableDiffusionTarget

    t0 = time.perf_counter()
    extra = {"memory_limit": 1000.0} if "memory_limit" in SDParams.model_fields else {}  # measure, never refuse
    target = StableDiffusionTarget(SDParams(model=folder, dtype=dtype, **extra), TargetContext(device="cpu"))
    # the weights may still be mapped from the files, not read: touch them so that the baseline
    # holds them (a forward pass would read them in and count them as activations otherwise)
    with torch.no_grad():
        for module in (target.unet, target.vae, target.text_encoder):
            for p in module.parameters():
                p.view(-1)[:: max(1, 4096 // p.element_size())].sum()
    load_s = time.perf_counter() - t0
    loaded, loading_peak = _rss_gb(), _peak_gb()
    _reset_peak()
    out = {"dtype": dtype, "dtype_used": target.precision["dtype"], "component": component, "load_s": round(load_s, 1),
           "loaded_gb": round(loaded, 2), "loading_peak_gb": round(loading_peak, 2), "rows": []}
    g = torch.Generator().manual_seed(0)
    size, lat = target.image_size, target.image_size // target.vae_factor
    cond = target.text_embeddings([""]).to(target.dtype)

    def run(b: int) -> None:
        with torch.no_grad():
            if component == "unet":
                z = torch.randn(b, 4, lat, lat, generator=g).to(target.dtype)
                steps = torch.full((b,), 500, dtype=torch.long)
                target.unet(z, steps, encoder_hidden_states=cond.expand(b, -1, -1)).sample
            elif component == "vae_encode":
                x = (torch.rand(b, 3, size, size, generator=g) * 2 - 1).to(target.dtype)
                target.vae.encode(x).latent_dist.mean
            else:
                z = torch.randn(b, 4, lat, lat, generator=g).to(target.dtype)
                target.vae.decode(z / target.scaling_factor).sample

    if component == "unet":
        run(1)  # warm-up (oneDNN primitive creation)
    threads = torch.get_num_threads()
    for b in sorted(batches):
        _reset_peak()
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        run(b)
        s, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = _peak_gb()
        out["rows"].append({"batch": b, "seconds": round(s, 2), "s_per_row": round(s / b, 2),
                            "cpu_s_per_row": round(cpu / b, 2), "quiet_s_per_row": round(cpu / b / threads, 2),
                            "threads": threads, "load_avg": round((load0 + os.getloadavg()[0]) / 2, 1),
                            "peak_gb": round(peak, 2), "act_gb_per_row": round((peak - loaded) / b, 3)})
        print(json.dumps({"progress": component, "dtype": dtype, **out["rows"][-1]}), file=sys.stderr, flush=True)
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| dtype | component | batch | CPU s / row | quiet s / row | wall s / row (load) | peak RSS GB | activations GB / row | loaded GB (peak while loading) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['dtype_used']} | {r['component'].replace('_', ' ')} | {row['batch']} | {row['cpu_s_per_row']:.1f} | "
                f"{row['quiet_s_per_row']:.1f} | {row['s_per_row']:.1f} ({row['load_avg']:.0f}) | {row['peak_gb']:.2f} | "
                f"{row['act_gb_per_row']:.2f} | {r['loaded_gb']:.2f} ({r['loading_peak_gb']:.2f}) |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=str(DEFAULT))
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--unet-batches", default="1,2,4")
    ap.add_argument("--vae-batches", default="1,2")
    ap.add_argument("--components", default="unet,vae_encode,vae_decode")
    ap.add_argument("--json")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # dtype component batches
    args = ap.parse_args()
    if args.child:
        dtype, component, batches = args.child
        print(json.dumps(measure(args.folder, dtype, component, [int(b) for b in batches.split(",")])))
        return
    ensure(Path(args.folder))
    results = []
    for dtype in args.dtypes.split(","):
        for component in args.components.split(","):
            batches = args.unet_batches if component == "unet" else args.vae_batches
            proc = subprocess.run(
                [sys.executable, __file__, "--folder", args.folder, "--child", dtype, component, batches],
                stdout=subprocess.PIPE, text=True, check=True,
            )
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    md = table(results)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results}, indent=2))
    if not args.no_record:
        from _results import append_result

        cells = "; ".join(
            f"{r['dtype_used']} {r['component']} b{row['batch']}: {row['quiet_s_per_row']:.2f} quiet s/row "
            f"({row['s_per_row']:.1f} wall at load {row['load_avg']:.0f}), peak {row['peak_gb']:.2f} GB"
            for r in results for row in r["rows"]
        )
        append_result("bench_sd", f"SD v1.5 random weights, 512x512, CPU ({os.cpu_count()} cores)", cells)


if __name__ == "__main__":
    main()
