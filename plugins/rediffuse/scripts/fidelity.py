"""Every attack x {threshold, classifier default recipe, classifier paper recipe}, and the ensemble
against the best single attack, on the demo model, through audit's runner.

    .venv/bin/python plugins/rediffuse/scripts/fidelity.py [--limit 500] [--out /tmp/fidelity]
        [--recipes default,paper] [--threads 1]

One ``audit run`` on ``builtin:digits/members`` vs ``builtin:digits/nonmembers`` (the first
``--limit`` of each) with the demo's four attacks (audit.yaml's params) and, per attack, one entry
per classifier recipe sharing the attack's ``seed_key`` (the same per-image noise; ReDiffuse's
variations come from the query cache, a folder under ``--out``), plus five ensembles:
logistic, rank-mean and auto of [rediffuse, pia], logistic and auto of all four, and ReDiffuse with the
adaptive budget (``n: auto``, ``max_n: 10``) at ``stop_z`` 1, 2 and 3 (its draws are the fixed
n=10 entry's, so they come from the cache too).

Every number is on the same held-out images: the run's seeded 80 % (``inference.calibration_fraction``
0.2 for training the classifiers and fitting the ensembles). The threshold column is each
classifier entry's ``threshold_scorer_metrics`` (the attack's own score on those held-out images).
Prints Markdown tables and writes ``fidelity.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

ATTACKS = {
    "rediffuse": {"plugin": "rediffuse", "params": {"t": 200, "k": 100, "n": 10, "distance": "l2"}},
    "secmia": {"plugin": "secmia", "params": {"t_sec": 100, "k": 10}},
    "pia": {"plugin": "pia", "params": {"t": 200, "p": 4}},
    "naive-loss": {"plugin": "naive-loss", "params": {"t": 200}},
}
ADAPTIVE_Z = (1.0, 2.0, 3.0)
ENSEMBLES = {
    "ensemble-logistic": {"of": ["rediffuse", "pia"], "combiner": "logistic"},
    "ensemble-rank-mean": {"of": ["rediffuse", "pia"], "combiner": "rank-mean"},
    "ensemble-auto": {"of": ["rediffuse", "pia"], "combiner": "auto"},
    "ensemble-all-logistic": {"of": list(ATTACKS), "combiner": "logistic"},
    "ensemble-all-auto": {"of": list(ATTACKS), "combiner": "auto"},
}


def build_config(args, out: Path) -> dict:
    attacks = []
    for name, a in ATTACKS.items():
        attacks.append({**a, "name": name})
        for recipe in args.recipes:
            scorer = "classifier" if recipe == "default" else {"kind": "classifier", "recipe": recipe}
            attacks.append({**a, "name": f"{name}-{recipe}", "seed_key": name, "scorer": scorer})
    for name, p in ENSEMBLES.items():
        attacks.append({"plugin": "ensemble", "name": name, "params": p})
    for z in ADAPTIVE_Z:
        attacks.append({
            "plugin": "rediffuse", "name": f"rediffuse-auto-z{z:g}", "seed_key": "rediffuse",
            "params": {**ATTACKS["rediffuse"]["params"], "n": "auto", "max_n": 10, "stop_z": z},
        })
    return {
        "run": {"name": "fidelity", "seed": args.seed, "device": "cpu", "batch_size": args.batch_size},
        "target": {"plugin": "ddim", "model": "builtin:digits-ddpm"},
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": args.limit},
        "attacks": attacks,
        "cache": {"enabled": True, "dir": str(out / "query-cache")},
        "metrics": {"bootstrap": args.bootstrap},
    }


def cell(m: dict) -> str:
    return f"{m['auc']['value']:.3f} / {100 * m['tpr_at_1pct_fpr']['value']:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--recipes", default="default,paper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/fidelity")
    args = ap.parse_args()
    args.recipes = [r for r in args.recipes.split(",") if r]

    import torch

    torch.set_num_threads(args.threads)
    from audit_core.base.config import load_config_text
    from audit_core.run.runner import Runner

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(build_config(args, out), sort_keys=False)
    (out / "audit.yaml").write_text(text)
    start = time.perf_counter()
    run_dir = Runner(load_config_text(text, str(out / "audit.yaml"), out), output=out / "run", resume=True).run()
    wall = time.perf_counter() - start
    res = json.loads((run_dir / "results.json").read_text())["attacks"]

    print(f"\nheld-out AUC / TPR@1%FPR (%), demo model, seed {args.seed}, wall {wall:.0f} s\n")
    print("| attack | threshold | " + " | ".join(f"classifier, {r} recipe" for r in args.recipes) + " | held-out images |")
    print("|---|---|" + "---|" * len(args.recipes) + "---|")
    summary: dict = {"attacks": {}, "ensembles": {}, "wall_seconds": round(wall, 1), "limit": args.limit}
    for name in ATTACKS:
        first = res[f"{name}-{args.recipes[0]}"]
        row = {"threshold": first["threshold_scorer_metrics"]}
        for r in args.recipes:
            row[r] = res[f"{name}-{r}"]["metrics"]
            row[f"{r}_scorer"] = {k: v for k, v in res[f"{name}-{r}"]["scorer"].items() if "curve" not in k}
        summary["attacks"][name] = row
        print(f"| {name} | {cell(row['threshold'])} | " + " | ".join(cell(row[r]) for r in args.recipes)
              + f" | {first['n_members']}+{first['n_nonmembers']} |")
    print("\n| ensemble | combined | best single component (same held-out images) |")
    print("|---|---|---|")
    for name in ENSEMBLES:
        e = res[name]
        comps = e["components_on_evaluation"]
        best = max(comps, key=lambda n: comps[n]["auc"]["value"])
        summary["ensembles"][name] = {"metrics": e["metrics"], "components": comps, "fit": e["scorer"]}
        chosen = f", chose {e['scorer']['chosen']}" if "chosen" in e["scorer"] else ""
        print(f"| {name} ({', '.join(e['scorer']['of'])}{chosen}) | {cell(e['metrics'])} | {best}: {cell(comps[best])} |")
    fixed = res[f"rediffuse-{args.recipes[0]}"]["threshold_scorer_metrics"]
    print("\n| ReDiffuse (t=200, k=100, l2), held-out images | AUC / TPR@1%FPR (%) | queries per held-out image |")
    print("|---|---|---|")
    print(f"| fixed n=10 | {cell(fixed)} | 10 |")
    summary["adaptive"] = {"fixed_n10": fixed}
    for z in ADAPTIVE_Z:
        e = res[f"rediffuse-auto-z{z:g}"]
        summary["adaptive"][f"z{z:g}"] = {
            "metrics": e["metrics"], "queries_per_image_evaluation": e["queries_per_image_evaluation"],
            "stop_threshold": e["scorer"]["calibrated_params"]["stop_threshold"],
        }
        print(f"| n: auto, max_n 10, stop_z {z:g} | {cell(e['metrics'])} | {e['queries_per_image_evaluation']:.2f} |")
    (out / "fidelity.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out / 'fidelity.json'} and the run directory {run_dir}")


if __name__ == "__main__":
    main()
