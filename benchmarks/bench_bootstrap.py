"""The bootstrap intervals of ``audit_core.stats.metrics``: all resamples at once against the loop of
scikit-learn calls it replaced, on the same scores.

    python benchmarks/bench_bootstrap.py [--scores RUN_DIR/scores.csv] [--resamples 1000]
                                         [--reference-resamples 1000] [--note TEXT] [--no-record]

Scores: a run's scores.csv (every attack in it), or by default four synthetic attacks of
500 members + 500 non-members (float32 scores, like a run's). For each attack, ``metrics.compute``
(point values and intervals) is timed, wall and CPU seconds, and so is the reference: per resample
``rng.choice`` per class and scikit-learn's ``roc_curve`` / ``roc_auc_score`` (``--reference-resamples
0`` skips it). The intervals of the two must agree to 1e-9 (they use the same seeded resamples).
Appends a row to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result  # noqa: E402


def load_scores(path: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if path is None:
        rng = np.random.default_rng(0)
        out = {}
        for i, shift in enumerate((1.2, 0.4, 1.6, 0.5)):
            s = np.concatenate([rng.normal(shift, 1, 500), rng.normal(0, 1, 500)]).astype(np.float32).astype(np.float64)
            out[f"synthetic-{i}"] = (s, np.array([1] * 500 + [0] * 500))
        return out
    by: dict[str, list[tuple[float, int]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            by.setdefault(row["attack"], []).append((float(row["score"]), int(row["label"] == "member")))
    return {k: (np.array([s for s, _ in v]), np.array([y for _, y in v])) for k, v in by.items()}


def reference_ci(s: np.ndarray, y: np.ndarray, n: int, seed: int) -> dict[str, list[float]]:
    """The bootstrap as it was: a scikit-learn ROC per resample."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from audit_core.stats.metrics import LEVELS, tpr_at_fpr

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        fpr, tpr, _ = roc_curve(y[idx], s[idx], drop_intermediate=False)
        point = {"auc": float(roc_auc_score(y[idx], s[idx])), "asr": float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0))}
        for key, level in LEVELS.items():
            point[key] = tpr_at_fpr(fpr, tpr, level)
        for key, value in point.items():
            draws.setdefault(key, []).append(value)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", type=Path, help="a run's scores.csv (default: four synthetic attacks)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--reference-resamples", type=int, default=1000, help="0: skip the scikit-learn reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)

    from audit_core.stats import metrics

    data = load_scores(args.scores)
    metrics.compute(*next(iter(data.values())), bootstrap=2, seed=args.seed)  # first-call set-up off the clock
    load = os.getloadavg()[0]
    wall = cpu = 0.0
    ours = {}
    for name, (s, y) in data.items():
        t, c = time.perf_counter(), time.process_time()
        ours[name] = metrics.compute(s, y, args.resamples, args.seed)
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
    ref_wall = ref_cpu = 0.0
    worst = 0.0
    if args.reference_resamples:
        for name, (s, y) in data.items():
            t, c = time.perf_counter(), time.process_time()
            ref = reference_ci(s, y, args.reference_resamples, args.seed)
            ref_wall += time.perf_counter() - t
            ref_cpu += time.process_time() - c
            if args.reference_resamples == args.resamples:
                for key, (lo, hi) in ref.items():
                    got = ours[name][key]["ci95"]
                    worst = max(worst, abs(got[0] - lo), abs(got[1] - hi))
        if worst > 1e-9:
            print(f"intervals differ from the reference by {worst:.3g}", file=sys.stderr)
            return 1
    n_images = sum(len(s) for s, _ in data.values()) // len(data)
    setup = f"{len(data)} attacks x {args.resamples} resamples x {n_images} images ({args.scores or 'synthetic'}), load avg {load:.1f}"
    cells = f"vectorized {wall:.3f} s wall / {cpu:.3f} s CPU"
    if args.reference_resamples:
        cells += (
            f"; scikit-learn loop ({args.reference_resamples} resamples) {ref_wall:.1f} s wall / {ref_cpu:.1f} s CPU"
            + (f"; max |interval difference| {worst:.2g}" if args.reference_resamples == args.resamples else "")
        )
    if args.note:
        cells += f"; note: {args.note}"
    print(f"{setup}: {cells}")
    if not args.no_record:
        append_result("bench_bootstrap", setup, cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
