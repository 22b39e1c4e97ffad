"""Seconds to render the HTML report of a finished run (target: under 1 s on the demo's results,
1,000 images x 4 attacks).

    python benchmarks/bench_report.py RUN_DIR [--repeat 5] [--no-record] [--label TEXT]

RUN_DIR is a finished run (e.g. the output of `make demo`, reports/digits-demo). It is copied to a
temporary folder first and only the copy is rendered: the run itself is never touched. Measured:
  render   HtmlReport.render_html on the copy, in this process: the first call (cold: the
           reporter's modules and its plotting path imported) and the median / min of --repeat
           further calls (warm);
  command  the whole `audit report COPY` as a subprocess (Python start-up, plugin discovery, both
           the html and markdown reporters, writing the files), median of 3.
Appends a dated row to benchmarks/RESULTS.md unless --no-record."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import append_result  # benchmarks/_results.py (this script's folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    ap.add_argument("--label", default="", help="prefix of the setup cell, e.g. 'before (matplotlib plots)'")
    args = ap.parse_args()
    if not (args.run_dir / "results.json").is_file():
        sys.exit(f"{args.run_dir} is not a finished run directory (no results.json)")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        run = Path(tmp) / args.run_dir.name
        shutil.copytree(args.run_dir, run, ignore=shutil.ignore_patterns(".lock", "state.sqlite*"))

        t0 = time.perf_counter()
        from audit_core.run.reporting import RunView
        from audit_html_report.html import HtmlParams, HtmlReport

        reporter = HtmlReport(HtmlParams())
        html = reporter.render_html(RunView(run))
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            reporter.render_html(RunView(run))
            warm.append(time.perf_counter() - t)

        audit = Path(sys.executable).with_name("audit")
        command = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([str(audit), "report", str(run)], check=True, capture_output=True)
            command.append(time.perf_counter() - t)

    results = __import__("json").loads((args.run_dir / "results.json").read_text())
    n_images = sum(int(a.get("n_members", 0)) + int(a.get("n_nonmembers", 0)) for a in results.get("attacks", {}).values())
    setup = f"{args.label + ', ' if args.label else ''}{args.run_dir.name}: {len(results.get('attacks', {}))} attacks, {n_images} scores, {os.cpu_count()} cores"
    cells = (
        f"render cold {cold:.2f} s, warm median {statistics.median(warm):.3f} s (min {min(warm):.3f}); "
        f"`audit report` {statistics.median(command):.2f} s; report.html {len(html) / 1e3:.0f} kB"
    )
    print(f"{setup}\n{cells}")
    if not args.no_record:
        append_result("bench_report", setup, cells)


if __name__ == "__main__":
    main()
