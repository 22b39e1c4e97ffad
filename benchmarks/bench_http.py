"""Throughput of the ``http`` target (images/s) against its concurrency, on a stub server with a
fixed injected latency and capacity.

    python benchmarks/bench_http.py [--latency 0.5] [--capacity 8] [--concurrency 1,2,4,8,16]
                                    [--rounds 10] [--rows-per-request 1] [--in-process]
                                    [--no-record] [--json OUT]

The stub (``audit_http.testing.echo_app``) speaks ``audit-variation/1`` on a loopback port: every
request holds one of ``capacity`` slots for ``latency`` seconds (more requests queue) and returns
its input images. With one image per request the ideal throughput is
``min(capacity, concurrency) / latency`` images/s; the target is >= 90 % of it at every
concurrency. Each point sends ``rounds * min(capacity, concurrency)`` requests (so the ideal time
is ``rounds * latency``) through ``HTTPTarget.variation`` (PNG encoding/decoding, request packing,
the thread pool and the retrying client included; no query cache). Prints a table and appends a
dated row to benchmarks/RESULTS.md.

The default latency (0.5 s; a diffusion variation request takes seconds) keeps the few
milliseconds of per-request CPU (JSON, base64, PNG, syscalls; more on a loaded machine) small
against it; with ``--latency 0.2`` on a busy 2-core box the c = 8 point drops to ~90 %."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from _results import append_result  # benchmarks/_results.py (this script's folder)

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def stub_server(latency: float, capacity: int, size: int, in_process: bool = False) -> Iterator[str]:
    """The echo stub on a loopback port: a separate process by default (like a real server, it
    does not share this process's GIL), else a thread."""
    if in_process:
        from audit_http.testing import LoopbackServer, echo_app

        with LoopbackServer(echo_app(latency, capacity, image_size=size, channels=1)) as url:
            yield url
        return
    cmd = [sys.executable, "-m", "audit_http.testing", "--latency", str(latency), "--capacity", str(capacity), "--size", str(size)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the stub server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def measure(url: str, concurrency: int, images: int, rows_per_request: int, size: int) -> float:
    import torch

    from audit_http.target import HTTPParams, HTTPTarget

    tg = HTTPTarget(HTTPParams(url=url, concurrency=concurrency, rows_per_request=rows_per_request, timeout_s=60))
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (images, 1, size, size), generator=g).float() / 127.5 - 1
        seeds = [[s] for s in range(images)]  # seeds[B][n], n = 1
        tg.variation(x[:concurrency], 100, 50, seeds[:concurrency])  # warm-up: connections, threads
        t0 = time.perf_counter()
        out = tg.variation(x, 100, 50, seeds)[:, 0]
        elapsed = time.perf_counter() - t0
        assert torch.equal(out, x), "the echo server must return its input"
        return images / elapsed
    finally:
        tg.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.5, help="seconds the stub holds each request")
    ap.add_argument("--capacity", type=int, default=8, help="requests the stub serves at once")
    ap.add_argument("--concurrency", default="1,2,4,8,16", help="comma-separated concurrency levels")
    ap.add_argument("--rounds", type=int, default=10, help="ideal seconds per point = rounds * latency")
    ap.add_argument("--rows-per-request", type=int, default=1, help="images per request")
    ap.add_argument("--size", type=int, default=32, help="image side (grayscale)")
    ap.add_argument("--in-process", action="store_true", help="run the stub in a thread of this process (shares the GIL)")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    L, C, R = args.latency, args.capacity, args.rows_per_request
    rows = []
    with stub_server(L, C, args.size, args.in_process) as url:
        for c in levels:
            requests = args.rounds * min(C, c)
            rate = measure(url, c, requests * R, R, args.size)
            ideal = min(C, c) * R / L
            rows.append({"concurrency": c, "images_per_s": rate, "ideal": ideal, "efficiency": rate / ideal})

    print(f"\nhttp target throughput: stub latency {L} s, capacity {C} requests, {R} image(s) of "
          f"{args.size}x{args.size} per request")
    print("| concurrency | images/s | ideal min(C, c)/L | efficiency |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['images_per_s']:.1f} | {r['ideal']:.1f} | {100 * r['efficiency']:.0f}% |")
    ok = all(r["efficiency"] >= 0.9 for r in rows)
    print(f"target >= 90% at every concurrency: {'PASS' if ok else 'FAIL'}")

    if args.json:
        args.json.write_text(json.dumps({"latency": L, "capacity": C, "rows_per_request": R, "points": rows}, indent=2))
    if not args.no_record:
        cells = "; ".join(
            f"c={r['concurrency']}: {r['images_per_s']:.1f} img/s ({100 * r['efficiency']:.0f}% of {r['ideal']:.0f})"
            for r in rows
        )
        setup = f"stub latency {L} s, capacity {C}, {R} img/request, {args.size}x{args.size}, cpu x{os.cpu_count()}"
        print(f"appended to {append_result('bench_http', setup, f'{cells}; ' + ('PASS' if ok else 'FAIL') + ' (>= 90%)')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
