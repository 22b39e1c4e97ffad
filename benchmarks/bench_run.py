"""The whole ``audit run`` on the demo against the bare U-Net floor, in one process.

    python benchmarks/bench_run.py [--quick] [--limit N] [--config audit.yaml] [--set KEY=VALUE ...]
                                   [--floor-batches 64,128,256,512] [--json OUT] [--note TEXT] [--no-record]

Runs ``audit run CONFIG --set cache.enabled=false`` through the CLI's ``main`` in this process
(start-up included: the interpreter, the CLI, plugin discovery, config, torch) and splits its wall
time, from the moment the process started, into

- ``startup``: process start until the runner begins preparing (interpreter, imports, plugins, config);
- ``load``: building the target (diffusers import, weights), ``data``: reading the image lists,
  ``setup``: the rest of the preparation (attacks, executor, reporters, run directory checks);
- ``scoring``: per attack, its whole scoring loop (images, ``Attack.score``, the run store);
- ``metrics``: ``metrics.compute`` for every attack (point values and bootstrap intervals), and
  ``results``: the rest of writing results.json and scores.csv;
- ``reports``: rendering the reporters of the config; ``other``: whatever is left (run directory,
  locks, the summary table);

and ``first_batch``: process start until the first batch of the first attack is scored. CPU
seconds (all threads, ``time.process_time``) are reported beside the wall times: on a busy shared
machine they move much less than wall time.

The floor is then measured in the same process on the run's own U-Net: the run's NFEs (the sum
over attacks of nfe_per_image x images) as back-to-back forward passes of a fixed input at the
fastest of ``--floor-batches`` rows per pass, nothing else running. The target is
``whole <= 1.15 x (floor + 5 s)``. Prints a table, writes ``--json`` and appends a row to
benchmarks/RESULTS.md with the machine's load average (other work on a shared machine slows the
run and the floor unequally; the note says how busy it was).
"""

from __future__ import annotations

import time

T_SCRIPT = time.perf_counter()  # before any import of ours

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO, TARGET_SLACK_S = 1.15, 5.0


def process_age() -> float:
    """Seconds since this process started (Linux /proc; elsewhere since this script began)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22: starttime, in clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - T_SCRIPT


T0 = time.perf_counter() - process_age()  # the process start on the perf_counter clock


class Timeline:
    """Marks and durations, on the perf_counter clock, relative to the process start."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.spans: dict[str, float] = {}
        self.attacks: dict[str, dict[str, float]] = {}

        self.cpu: dict[str, float] = {}  # process CPU seconds (all threads) at each mark

    def mark(self, name: str) -> None:
        if name not in self.marks:
            self.marks[name] = time.perf_counter() - T0
            self.cpu[name] = time.process_time()

    def add(self, name: str, seconds: float) -> None:
        self.spans[name] = self.spans.get(name, 0.0) + seconds


def instrument(tl: Timeline) -> dict[str, Any]:
    """Wrap the runner's phases (by name; nothing the run computes changes)."""
    from audit_core.stats import metrics
    from audit_core.plugin import manager as plugins
    from audit_core.run import runner

    held: dict[str, Any] = {}
    R = runner.Runner

    def wrap(obj, name, before=None, after=None):
        original = getattr(obj, name)

        def wrapper(*a, **kw):
            if before:
                before(*a)
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                if after:
                    after(time.perf_counter() - t, *a)

        setattr(obj, name, wrapper)

    def prepare_done(seconds, self):
        tl.mark("prepare_end")
        held["runner"] = self
        held["target"] = self.target
        wrap_executor(self.executor)

    wrap(R, "prepare", before=lambda self: tl.mark("prepare_start"), after=prepare_done)
    wrap(runner, "load_records", after=lambda s, *a: tl.add("data", s))
    wrap(R, "finalize", after=lambda s, *a: tl.add("finalize", s))
    wrap(metrics, "compute", after=lambda s, *a: tl.add("metrics", s))
    wrap(R, "render_reports", after=lambda s, *a: tl.add("reports", s))

    # building the target ("load": diffusers' import, the weights): its class's __init__, wrapped
    # when the registry hands it out (importing it here would move that import into start-up)
    registry, depth = plugins.registry, [0]

    def timed_registry(what):
        reg = registry(what)
        for cls in reg.values() if what == "targets" else ():
            if isinstance(cls, type) and "_bench_init" not in cls.__dict__:
                init = cls.__init__

                def timed_init(self, *a, _init=init, **kw):
                    depth[0] += 1
                    t = time.perf_counter()
                    try:
                        return _init(self, *a, **kw)
                    finally:
                        depth[0] -= 1
                        if depth[0] == 0:  # a registered subclass calling its registered base
                            tl.add("load", time.perf_counter() - t)

                cls.__init__, cls._bench_init = timed_init, True
        return reg

    plugins.registry = timed_registry

    def wrap_executor(executor):
        run = executor.run

        def timed(job, batches):
            name = job.attack_context["name"]
            entry = tl.attacks.setdefault(name, {"seconds": 0.0, "batches": 0})
            it = iter(run(job, batches))
            while True:
                t = time.perf_counter()
                try:
                    res = next(it)
                except StopIteration:
                    entry["seconds"] += time.perf_counter() - t
                    return
                tl.mark("first_batch")
                entry["batches"] += 1
                yield res  # the runner commits it before asking for the next one
                entry["seconds"] += time.perf_counter() - t

        executor.run = timed

    return held


def floor(target, total_nfe: float, batches: list[int], seconds_per_size: float = 1.5) -> dict[str, Any]:
    """Seconds the bare U-Net needs for ``total_nfe`` rows at its fastest batch size."""
    import torch

    unet = getattr(target, "unet", None)
    if unet is None:
        raise SystemExit(f"the target {target.name!r} has no .unet to measure a floor with")
    unet = unet.to(target.device)
    dtype = next(unet.parameters()).dtype
    gen = torch.Generator().manual_seed(0)
    rates, cpu_rates = {}, {}
    with torch.no_grad():
        for b in batches:
            x = torch.randn(b, target.channels, target.image_size, target.image_size, generator=gen).to(target.device, dtype)
            steps = torch.full((b,), 100, device=target.device, dtype=torch.long)
            unet(x, steps)  # warm-up
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds_per_size or n < 2:
                unet(x, steps)
                n += 1
            if target.device.type == "cuda":
                torch.cuda.synchronize(target.device)
            rates[b] = n * b / (time.perf_counter() - t0)
            cpu_rates[b] = n * b / max(time.process_time() - c0, 1e-9)
    best = max(rates, key=rates.get)
    return {
        "nfe_per_s": {str(b): round(r, 1) for b, r in rates.items()},
        "best_batch": best,
        "seconds": total_nfe / rates[best],
        "cpu_seconds": total_nfe / cpu_rates[best],
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    tl = Timeline()
    from audit_core import cli  # the CLI module, as `audit` imports it

    cli.build_app()  # plugin discovery, as `audit` does before parsing
    tl.mark("cli_ready")
    held = instrument(tl)
    load_before = os.getloadavg()
    sets = ["cache.enabled=false", *args.set]
    if args.limit:
        sets.append(f"data.limit={args.limit}")
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        out = Path(tmp) / "run"
        argv = ["run", str(args.config), "--output", str(out)] + [a for s in sets for a in ("--set", s)]
        with contextlib.redirect_stdout(sys.stderr):
            try:
                cli.main(argv)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise SystemExit(f"audit run failed with exit code {exc.code}") from None
        tl.mark("run_end")
        results = json.loads((out / "results.json").read_text())
        if args.keep:
            import shutil

            shutil.copytree(out, args.keep, dirs_exist_ok=False)
    m = tl.marks
    n_images = results["run"]["n_members"] + results["run"]["n_nonmembers"]
    total_nfe = sum(a["nfe_per_image"] * (a["n_members"] + a["n_nonmembers"]) for a in results["attacks"].values())
    nfe_per_image = sum(a["nfe_per_image"] for a in results["attacks"].values())
    scoring = {k: round(v["seconds"], 2) for k, v in tl.attacks.items()}
    whole = m["run_end"]
    sp = tl.spans
    split = {
        "startup": m["prepare_start"],
        "load": sp.get("load", 0.0),
        "data": sp.get("data", 0.0),
        "setup": m["prepare_end"] - m["prepare_start"] - sp.get("load", 0.0) - sp.get("data", 0.0),
        "scoring": sum(scoring.values()),
        "metrics": tl.spans.get("metrics", 0.0),
        "results": tl.spans.get("finalize", 0.0) - tl.spans.get("metrics", 0.0),
        "reports": tl.spans.get("reports", 0.0),
    }
    split["other"] = whole - sum(split.values())
    fl = floor(held["target"], total_nfe, args.floor_batches)
    load_after = os.getloadavg()
    bound = TARGET_RATIO * (fl["seconds"] + TARGET_SLACK_S)
    import torch

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": str(args.config),
        "sets": sets,
        "device": str(held["target"].device),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in load_after],
        "images": n_images,
        "nfe_per_image": nfe_per_image,
        "nfe_total": total_nfe,
        "whole_seconds": round(whole, 2),
        "first_batch_seconds": round(m.get("first_batch", float("nan")), 2),
        "split_seconds": {k: round(v, 2) for k, v in split.items()},
        "scoring_seconds": scoring,
        "floor": {**fl, "seconds": round(fl["seconds"], 2)},
        "bound_seconds": round(bound, 2),
        "ratio_to_floor_plus_5s": round(whole / (fl["seconds"] + TARGET_SLACK_S), 3),
        "ratio_to_floor": round(whole / fl["seconds"], 3),
        "pass": whole <= bound,
        # CPU seconds (all threads): steadier than wall time on a shared machine
        "whole_cpu_seconds": round(tl.cpu["run_end"], 2),
        "startup_cpu_seconds": round(tl.cpu["prepare_start"], 2),
        "floor_cpu_seconds": round(fl["cpu_seconds"], 2),
        "cpu_ratio_to_floor": round(tl.cpu["run_end"] / fl["cpu_seconds"], 3),
    }


def record(res: dict[str, Any], note: str | None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import append_result

    s = res["split_seconds"]
    per_attack = ", ".join(f"{k} {v:.1f}" for k, v in res["scoring_seconds"].items())
    setup = (
        f"{res['config']} ({' '.join(res['sets'])}), {res['images']} images, {res['nfe_per_image']:g} NFE/img, "
        f"{res['device']} x{res['torch_threads']} threads, load avg {res['load_avg_before'][0]:.1f} -> {res['load_avg_after'][0]:.1f}"
    )
    cells = (
        f"whole {res['whole_seconds']:.1f} s vs floor {res['floor']['seconds']:.1f} s (batch {res['floor']['best_batch']}): "
        f"{res['ratio_to_floor_plus_5s']:.2f}x of floor + 5 s ({'PASS' if res['pass'] else 'FAIL'} <= 1.15); "
        f"first batch at {res['first_batch_seconds']:.1f} s; split: start-up {s['startup']:.1f}, load {s['load']:.1f}, "
        f"data {s['data']:.1f}, setup {s['setup']:.1f}, scoring {s['scoring']:.1f} ({per_attack}), metrics {s['metrics']:.2f}, "
        f"results {s['results']:.2f}, reports {s['reports']:.1f}, other {s['other']:.1f}"
    )
    cells += (
        f"; CPU seconds (steadier under load): whole {res['whole_cpu_seconds']:.1f} vs floor "
        f"{res['floor_cpu_seconds']:.1f} ({res['cpu_ratio_to_floor']:.2f}x), start-up {res['startup_cpu_seconds']:.1f}"
    )
    if note:
        cells += f"; note: {note}"
    append_result("bench_run", setup, cells, res["date"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "audit.yaml")
    ap.add_argument("--quick", action="store_true", help="data.limit=64 (a smoke test of the script)")
    ap.add_argument("--limit", type=int, help="data.limit (default: the config's)")
    ap.add_argument("--set", action="append", default=[], help="another --set for audit run (repeatable)")
    ap.add_argument("--floor-batches", default="64,128,256,512", help="rows per U-Net pass tried for the floor")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", type=Path, help="copy the run directory here (a new folder): scores.csv for checksums")
    ap.add_argument("--note", help="appended to the RESULTS.md row")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    args.floor_batches = [int(b) for b in str(args.floor_batches).split(",") if b.strip()]
    if args.quick and not args.limit:
        args.limit = 64
    res = run_benchmark(args)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if not args.no_record:
        record(res, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
