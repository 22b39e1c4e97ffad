"""How fast and how small the config loader refuses hostile YAML (issue 18's targets: an
800-byte alias bomb fails in well under a second and in little memory).

    python benchmarks/bench_yaml_bounds.py [--no-record]

Cases: the billion-laughs alias bomb (9 levels of 9 aliases, under 800 bytes: 387 million strings
once expanded), brackets nested 100 000 deep, and the shipped audit.yaml as the baseline. Each
is timed (best of 5, ``time.perf_counter``) and its peak Python allocation measured
(``tracemalloc``); a dated row goes to benchmarks/RESULTS.md. Exit 1 when a hostile case takes
0.5 s or more, or 50 MB or more."""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

from _results import append_result  # benchmarks/_results.py (this script's folder)

ROOT = Path(__file__).resolve().parents[1]
BOMB = "\n".join(
    [f'a0: &a0 [{",".join(["lol"] * 9)}]']
    + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["run: {name: x}"]
)
DEEP = "a: " + "[" * 100_000 + "]" * 100_000
LIMIT_S, LIMIT_BYTES = 0.5, 50 << 20


def measure(text: str) -> tuple[float, int, str]:
    """(best seconds of 5, peak bytes, outcome) of ``load_yaml(text)``."""
    from audit_core.base.config import load_yaml
    from audit_core.base.errors import ConfigError

    best, outcome = float("inf"), "loaded"
    for _ in range(5):
        t = time.perf_counter()
        try:
            load_yaml(text, "bench.yaml")
        except ConfigError as exc:
            outcome = "refused: " + str(exc).split(": ", 1)[-1][:60]
        best = min(best, time.perf_counter() - t)
    tracemalloc.start()
    try:
        load_yaml(text, "bench.yaml")
    except ConfigError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak, outcome


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    cases = {
        f"alias bomb ({len(BOMB)} bytes)": (BOMB, True),
        "brackets 100000 deep": (DEEP, True),
        "audit.yaml": ((ROOT / "audit.yaml").read_text(encoding="utf-8"), False),
    }
    cells, ok = [], True
    for name, (text, hostile) in cases.items():
        s, peak, outcome = measure(text)
        print(f"{name}: {s * 1000:.2f} ms, peak {peak / 1e6:.2f} MB, {outcome}")
        cells.append(f"{name}: {s * 1000:.2f} ms, {peak / 1e6:.2f} MB")
        if hostile and (s >= LIMIT_S or peak >= LIMIT_BYTES or outcome == "loaded"):
            ok = False
    cells.append("PASS" if ok else "FAIL")
    if not args.no_record:
        append_result("bench_yaml_bounds", f"python {sys.version.split()[0]}", "; ".join(cells))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
