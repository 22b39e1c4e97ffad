"""How much the ensemble-vs-best-single comparison depends on the one calibration split a run
draws: refit the ensemble on many seeded calibration splits of a finished run's scores.

    .venv/bin/python plugins/ensemble/scripts/resplit.py RUN_DIR [--of rediffuse,pia]
        [--of rediffuse,secmia,pia,naive-loss] [--splits 50] [--fraction 0.2]

Reads RUN_DIR/scores.csv (no model, no query). For each split seed 0..splits-1 the calibration
mask is audit_core.stats.scorer.calibration_split (the run's own rule) over the images in record order;
each combiner x transform is fitted on it and scored on the rest, against the best single member
*on those held-out images* (an oracle choice the ensemble does not get). Prints, per member set and
combiner, the mean and worst held-out AUC difference, how often the ensemble is at least as good,
and the mean TPR@1%FPR of the ensemble and of that best member.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from audit_core.stats import metrics
from audit_core.plugin.attacks import AttackContext
from audit_core.stats.scorer import calibration_split
from audit_core.testing import ToyParams, ToyTarget
from audit_ensemble import Ensemble, EnsembleParams

VARIANTS = [("logistic", "auto"), ("logistic", "none"), ("rank-mean", "auto"), ("auto", "auto")]


def load(run: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(table [N, m], labels [N])`` of the images every entry in ``names`` scored, in record order."""
    by: dict[str, dict[str, float]] = {n: {} for n in names}
    label: dict[str, int] = {}
    order: list[str] = []
    with open(run / "scores.csv") as f:
        for r in csv.DictReader(f):
            if r["attack"] in by:
                if r["image_id"] not in label:
                    order.append(r["image_id"])
                label[r["image_id"]] = 1 if r["label"] in ("member", "suspect") else 0
                by[r["attack"]][r["image_id"]] = float(r["score"])
    ids = [i for i in order if all(i in by[n] for n in names)]
    return np.array([[by[n][i] for n in names] for i in ids]), np.array([label[i] for i in ids])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--of", action="append", help="comma-separated members (repeatable)")
    ap.add_argument("--splits", type=int, default=50)
    ap.add_argument("--fraction", type=float, default=0.2)
    args = ap.parse_args()
    for of in [s.split(",") for s in (args.of or ["rediffuse,pia", "rediffuse,secmia,pia,naive-loss"])]:
        table, labels = load(args.run, of)
        print(f"\nmembers {', '.join(of)}: {len(labels)} images, {args.splits} seeded calibration splits of {args.fraction:.0%}\n")
        print("| combiner | transform | mean dAUC vs best member | worst | splits at least as good | TPR@1%FPR ensemble / best member (%) |")
        print("|---|---|---|---|---|---|")
        for combiner, transform in VARIANTS:
            att = Ensemble(EnsembleParams(of=of, combiner=combiner, transform=transform), ToyTarget(ToyParams()),
                           AttackContext(name="ensemble", seed_key="ensemble"))
            d, tpr, tpr_best, chosen = [], [], [], {}
            for seed in range(args.splits):
                fit = calibration_split(labels, args.fraction, seed)
                held = ~fit
                singles = [metrics.point_metrics(table[held, j], labels[held]) for j in range(len(of))]
                best = max(singles, key=lambda m: m["auc"])
                scores, info = att.fit_predict(table, labels, fit)
                m = metrics.point_metrics(scores[held], labels[held])
                d.append(m["auc"] - best["auc"])
                tpr.append(m["tpr_at_1pct_fpr"])
                tpr_best.append(best["tpr_at_1pct_fpr"])
                if "chosen" in info:
                    chosen[info["chosen"]] = chosen.get(info["chosen"], 0) + 1
            d = np.array(d)
            note = f" (chose {', '.join(f'{k} {v}x' for k, v in chosen.items())})" if chosen else ""
            print(f"| {combiner}{note} | {transform} | {d.mean():+.4f} | {d.min():+.4f} | {(d >= 0).mean():.0%} | "
                  f"{100 * np.mean(tpr):.1f} / {100 * np.mean(tpr_best):.1f} |")


if __name__ == "__main__":
    main()
