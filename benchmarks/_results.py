"""``benchmarks/RESULTS.md``: one dated row per benchmark run, appended by every script here."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\n| date | benchmark | setup | results |\n|---|---|---|---|\n"


def append_result(benchmark: str, setup: str, cells: str, date: str | None = None, path: Path = RESULTS_MD) -> Path:
    """Append ``| date | benchmark | setup | cells |`` (the table header first if the file is new)."""
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as fh:
        if new:
            fh.write(HEADER)
        fh.write(f"| {(date or dt.date.today().isoformat())[:10]} | {benchmark} | {setup} | {cells} |\n")
    return path
