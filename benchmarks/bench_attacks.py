"""Per-attack wall time against the U-Net floor on the demo model.

    python benchmarks/bench_attacks.py [--quick] [--json OUT] [--model builtin:digits-ddpm]
                                       [--limit N] [--batch-size B] [--device cpu] [--threads N]
                                       [--attacks secmia,pia] [--note TEXT] [--no-record]

One ``audit run`` (the in-process runner, query cache off, no reports) with the four attacks of
audit.yaml: rediffuse (t=200, k=100, n=10; skipped with a note when the plugin is not installed),
secmia (t_sec=100, k=10), pia (t=200, p=4) and naive-loss (t=200). For every attack it measures

- ``seconds``: wall time of the attack's whole scoring loop inside the runner - reading and
  preprocessing the images, ``Attack.score``, the per-batch commit to the run store;
- ``nfe``: U-Net evaluations per image (``nfe_total`` for the whole run);
- ``floor_seconds``: the same U-Net calls (same row counts, same timesteps, same order) replayed
  back to back on a fixed input, batch by batch right after each batch of the attack (so load
  from other processes hits both alike), nothing but the network running;
- ``overhead_ratio = seconds / floor_seconds`` (target: <= 1.15);

plus ``score_seconds`` (the time inside ``Attack.score`` only, as results.json reports it) and
``unet_seconds_in_run`` (the time inside the U-Net calls during the attack's own run, measured
around each call), ``non_unet_seconds = seconds - unet_seconds_in_run`` (everything that is not
the network: data, DDIM arithmetic, noise, store) and ``overhead_ratio_in_run = seconds /
unet_seconds_in_run``: on a shared machine the network itself runs faster or slower from one
minute to the next, and these show the overhead free of that noise. Also the attack's
AUC / ASR / TPR@1%FPR on the evaluated images. Writes
``{"attacks": {name: {...}}}`` to ``--json``, prints a table and appends a dated row to
benchmarks/RESULTS.md. ``--quick``: 64 members + 64 non-members.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _results import RESULTS_MD, append_result  # benchmarks/_results.py (this script's folder)

ROOT = Path(__file__).resolve().parents[1]

#: the attacks of audit.yaml, in its order
ATTACKS = yaml.safe_load((ROOT / "audit.yaml").read_text(encoding="utf-8"))["attacks"]


def build_config(args: argparse.Namespace, attacks: list[dict]) -> str:
    return yaml.safe_dump(
        {
            "run": {"name": "bench-attacks", "seed": 0, "device": args.device, "batch_size": args.batch_size},
            "target": {"plugin": "ddim", "model": args.model},
            "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": args.limit},
            "attacks": attacks,
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 100},
        },
        sort_keys=False,
    )


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


class Probe:
    """Records every ``target.eps`` call (rows, t) of the running attack, times each attack's
    scoring loop, and replays its calls back to back for the floor."""

    def __init__(self, target):
        self.target = target
        self.current: str | None = None
        self.calls: dict[str, list[tuple[int, int]]] = {}
        self.seconds: dict[str, float] = {}
        self.floor: dict[str, float] = {}
        self.inside: dict[str, float] = {}  # time inside the U-Net calls during the attack itself
        original = target.eps

        def eps(z_t, t, captions=None):
            if self.current is None:
                return original(z_t, t, captions)
            self.calls[self.current].append((int(z_t.shape[0]), int(t)))
            _sync(target.device)
            t0 = time.perf_counter()
            out = original(z_t, t, captions)
            _sync(target.device)
            self.inside[self.current] += time.perf_counter() - t0
            return out

        self.original_eps = original
        target.eps = eps  # instance attribute: ddim.variation / eps_fn go through it too

    def warm_up(self) -> None:
        import torch

        t = self.target
        x = torch.randn(2, t.channels, t.image_size, t.image_size, device=t.device)
        for _ in range(2):
            self.original_eps(x, 10)
        _sync(t.device)

    def wrap_executor(self, executor) -> None:
        """Time each batch from the moment the runner asks for it (image loading, scoring) until
        it asks for the next one (its commit to the run store included), then replay that
        batch's U-Net calls at once: attack and floor are measured side by side, batch by
        batch, so a busy shared machine slows both alike."""
        run = executor.run

        def timed_run(job, batches):
            name = job.attack_context["name"]
            self.current, self.calls[name] = name, []
            self.seconds[name] = self.floor[name] = self.inside[name] = 0.0
            it = iter(run(job, batches))
            try:
                while True:
                    first = len(self.calls[name])
                    _sync(self.target.device)
                    t0 = time.perf_counter()
                    try:
                        res = next(it)
                    except StopIteration:
                        self.seconds[name] += time.perf_counter() - t0
                        break
                    yield res  # the runner commits the batch before it resumes us
                    _sync(self.target.device)
                    self.seconds[name] += time.perf_counter() - t0
                    self.current = None
                    self.floor[name] += self.replay(self.calls[name][first:])
                    self.current = name
            finally:
                self.current = None

        executor.run = timed_run

    def replay(self, calls: list[tuple[int, int]]) -> float:
        """The same U-Net calls, back to back, on one fixed input."""
        import torch

        if not calls:
            return 0.0
        t = self.target
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(max(r for r, _ in calls), t.channels, t.image_size, t.image_size, generator=gen).to(t.device)
        nfe0 = t.stats.nfe
        _sync(t.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            for rows, step in calls:
                self.original_eps(x[:rows], step)
        _sync(t.device)
        seconds = time.perf_counter() - t0
        t.stats.nfe = nfe0  # the replay is not the attack's
        return seconds


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from audit_core.plugin import manager as plugins
    from audit_core.base.config import load_config_text
    from audit_core.run.runner import Runner

    if args.threads:
        torch.set_num_threads(args.threads)
    installed = plugins.registry("attacks")
    attacks, notes = [], []
    for a in ATTACKS:
        if args.attacks and a["plugin"] not in args.attacks:
            continue
        if a["plugin"] in installed:
            attacks.append(a)
        else:
            notes.append(f"{a['plugin']}: skipped (plugin not installed)")
    if not attacks:
        raise SystemExit("no attack plugin is installed (pip install -e plugins/secmia ...)")

    probe: dict[str, Probe] = {}

    class BenchRunner(Runner):
        def prepare(self) -> None:
            super().prepare()
            if "p" not in probe:  # run() calls prepare() once
                probe["p"] = Probe(self.target)
                probe["p"].warm_up()
                probe["p"].wrap_executor(self.executor)

    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_config_text(build_config(args, attacks), "bench_attacks.yaml", ROOT)
        t0 = time.perf_counter()
        run_dir = BenchRunner(loaded, output=Path(tmp) / "run").run()
        total = time.perf_counter() - t0
        results = json.loads((run_dir / "results.json").read_text())
    p = probe["p"]
    out: dict[str, Any] = {}
    for name, entry in results["attacks"].items():
        n_images = entry["n_members"] + entry["n_nonmembers"]
        seconds, floor = p.seconds[name], p.floor[name]
        out[name] = {
            "seconds": round(seconds, 4),
            "nfe": entry["nfe_per_image"],
            "floor_seconds": round(floor, 4),
            "overhead_ratio": round(seconds / floor, 4) if floor > 0 else None,
            "score_seconds": entry["seconds"],
            "unet_seconds_in_run": round(p.inside[name], 4),
            "non_unet_seconds": round(seconds - p.inside[name], 4),
            "overhead_ratio_in_run": round(seconds / p.inside[name], 4) if p.inside[name] > 0 else None,
            "nfe_total": int(sum(r for r, _ in p.calls[name])),
            "unet_calls": len(p.calls[name]),
            "images": n_images,
            "auc": entry["metrics"]["auc"]["value"],
            "asr": entry["metrics"]["asr"]["value"],
            "tpr_at_1pct_fpr": entry["metrics"]["tpr_at_1pct_fpr"]["value"],
        }
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "model": args.model,
        "device": str(p.target.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "batch_size": args.batch_size,
        "limit_per_class": args.limit,
        "total_seconds": round(total, 2),
        "notes": notes,
        "attacks": out,
    }


def print_table(res: dict[str, Any]) -> None:
    print(
        f"{res['mode']} on {res['model']} ({res['device']}, {res['torch_threads']} threads, "
        f"batch {res['batch_size']}, {res['limit_per_class']} + {res['limit_per_class']} images)"
    )
    head = (
        f"{'attack':<12} {'NFE/img':>7} {'seconds':>9} {'floor s':>9} {'ratio':>7} {'non-UNet s':>10} "
        f"{'in-run':>7} {'AUC':>6} {'ASR':>6} {'TPR@1%':>7}"
    )
    print(head)
    print("-" * len(head))
    for name, a in res["attacks"].items():
        ratio = f"{a['overhead_ratio']:.3f}" if a["overhead_ratio"] is not None else "n/a"
        in_run = f"{a['overhead_ratio_in_run']:.3f}" if a["overhead_ratio_in_run"] is not None else "n/a"
        print(
            f"{name:<12} {a['nfe']:>7g} {a['seconds']:>9.3f} {a['floor_seconds']:>9.3f} {ratio:>7} "
            f"{a['non_unet_seconds']:>10.3f} {in_run:>7} {a['auc']:>6.3f} {a['asr']:>6.3f} {a['tpr_at_1pct_fpr']:>7.3f}"
        )
    for note in res["notes"]:
        print(f"note: {note}")
    print(
        "ratio = seconds / floor s (floor: the same U-Net calls replayed back to back); non-UNet s = seconds "
        "minus the time inside the U-Net calls of the run itself; in-run = seconds / that time (immune to "
        "the U-Net running faster or slower than in the replay on a shared machine)"
    )
    print(f"total {res['total_seconds']:.1f} s (including model load, metrics and the floor replays)")


def append_row(res: dict[str, Any], path: Path = RESULTS_MD) -> None:
    cells = "; ".join(
        f"{name} {a['overhead_ratio']:.2f}x ({a['seconds']:.2f} s / floor {a['floor_seconds']:.2f} s, {a['nfe']:g} NFE)"
        for name, a in res["attacks"].items()
    )
    cells += "".join(f"; {n}" for n in res["notes"])
    if res.get("note"):
        cells += f"; note: {res['note']}"
    setup = (
        f"{res['mode']}, {res['model']}, {res['device']} x{res['torch_threads']} threads, "
        f"{2 * res['limit_per_class']} images, batch {res['batch_size']}"
    )
    append_result("bench_attacks", setup, f"overhead_ratio: {cells}", res["date"], path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 + 64 images (under 2 minutes on 2 CPU cores)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--model", default="builtin:digits-ddpm")
    ap.add_argument("--limit", type=int, help="images per class (default 500, 64 with --quick)")
    ap.add_argument("--batch-size", type=int, default=64, help="run.batch_size (default 64, audit.yaml's)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: on a shared CPU more threads only contend and make timings "
        "erratic; the ratio is what matters; 0 = torch's default)",
    )
    ap.add_argument("--attacks", type=lambda v: [a.strip() for a in v.split(",") if a.strip()], help="only these (comma-separated)")
    ap.add_argument("--note", default="", help="free text for the RESULTS.md row (e.g. which model this is)")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.limit is None:
        args.limit = 64 if args.quick else 500
    from audit_core.base.errors import AuditError

    try:
        res = run_benchmark(args)
    except AuditError as exc:
        print(f"bench_attacks: {exc}", file=sys.stderr)
        return 2
    res["note"] = args.note
    print_table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2), encoding="utf-8")
    if not args.no_record:
        append_row(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
