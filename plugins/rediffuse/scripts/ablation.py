"""ReDiffuse ablation on the demo model: AUC / ASR / TPR@1%FPR for n x t, through audit's runner.

    .venv/bin/python plugins/rediffuse/scripts/ablation.py [--model builtin:digits-ddpm]
        [--limit 500] [--ns 1,2,5,10] [--ts 50,100,200,300] [--k-rule half|100] [--no-classifier]
        [--out /tmp/rediffuse-ablation] [--threads 1]

One ``audit run`` (``Runner``) on ``builtin:digits/members`` vs ``builtin:digits/nonmembers``
(the first ``--limit`` of each), one attack entry per (t, n). All entries share one ``seed_key``,
so draw ``d`` of an image is the same noise in every entry, and the query cache (a fresh folder
under ``--out``) serves the smaller-``n`` entries from the largest one: for every ``t`` only the
largest ``n`` is actually computed (the first m of n draws equal an m-draw run), which is also
what makes the n-comparison paired. ``k`` is ``t / 2`` by default (two DDIM steps per query, as at
the default t=200, k=100), so every query costs the same and only ``t`` changes; ``--k-rule 100``
uses k = min(100, t) instead.

With the classifier on (default), the default setting (t=200, n=10) and n=1 are also scored with
``scorer: classifier`` (trained on a 20 % calibration split, metrics on the other 80 %).

Prints a Markdown table and writes ``ablation.json`` (and the run directory) under ``--out``.
Seconds per 100 images are those of the computed (largest-n) entries, measured by the runner.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import yaml


def build_config(args, ts: list[int], ns: list[int], out: Path) -> dict:
    attacks = []
    for t in ts:
        k = t // 2 if args.k_rule == "half" else min(100, t)
        for n in sorted(ns, reverse=True):  # largest first: the others are cache hits
            attacks.append({
                "plugin": "rediffuse",
                "name": f"t{t}-n{n}",
                "seed_key": "rediffuse",
                "params": {"t": t, "k": k, "n": n, "distance": args.distance},
            })
    if not args.no_classifier:
        for n in sorted({max(ns), 1} & set(ns), reverse=True):
            attacks.append({
                "plugin": "rediffuse",
                "name": f"t200-n{n}-classifier",
                "seed_key": "rediffuse",
                "scorer": "classifier",
                "params": {"t": 200, "k": 100, "n": n, "distance": args.distance},
            })
    return {
        "run": {"name": "rediffuse-ablation", "seed": args.seed, "device": args.device, "batch_size": args.batch_size},
        "target": {"plugin": "ddim", "model": args.model},
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": args.limit},
        "attacks": attacks,
        "cache": {"enabled": True, "dir": str(out / "query-cache")},
        "metrics": {"bootstrap": args.bootstrap},
    }


def pct(m: dict) -> str:
    return f"{100 * m['value']:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:digits-ddpm")
    ap.add_argument("--limit", type=int, default=500, help="images of each group (members, non-members)")
    ap.add_argument("--ns", default="1,2,5,10")
    ap.add_argument("--ts", default="50,100,200,300")
    ap.add_argument("--k-rule", choices=("half", "100"), default="half")
    ap.add_argument("--distance", default="l2")
    ap.add_argument("--no-classifier", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (on a shared CPU, more threads only spin)")
    ap.add_argument("--out", default="/tmp/rediffuse-ablation")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from audit_core.base.config import load_config_text
    from audit_core.run.runner import Runner

    ts = [int(v) for v in args.ts.split(",")]
    ns = [int(v) for v in args.ns.split(",")]
    out = Path(args.out)
    shutil.rmtree(out / "query-cache", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    cfg = build_config(args, ts, ns, out)
    text = yaml.safe_dump(cfg, sort_keys=False)
    (out / "audit.yaml").write_text(text)
    start = time.perf_counter()
    run_dir = Runner(load_config_text(text, str(out / "audit.yaml"), out), output=out / "run").run()
    wall = time.perf_counter() - start
    res = json.loads((run_dir / "results.json").read_text())["attacks"]

    rows, table = [], []
    table.append("| t | k | n | NFE/img | AUC | ASR | TPR@1%FPR (%) | s/100 img |")
    table.append("|---|---|---|---|---|---|---|---|")
    for t in ts:
        for n in ns:
            e = res[f"t{t}-n{n}"]
            m = e["metrics"]
            fresh = n == max(ns)
            rows.append({"t": t, "k": e["params"]["k"], "n": n, "auc": m["auc"], "asr": m["asr"],
                         "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"], "nfe_per_image": e["nfe_per_image"],
                         "seconds_per_100_images": e["seconds_per_100_images"] if fresh else None})
            secs = f"{e['seconds_per_100_images']:.1f}" if fresh else "(cached)"
            table.append(
                f"| {t} | {e['params']['k']} | {n} | {e['nfe_per_image']:.0f} | {m['auc']['value']:.3f} "
                f"| {m['asr']['value']:.3f} | {pct(m['tpr_at_1pct_fpr'])} | {secs} |"
            )
    nn_rows = []
    for name, e in res.items():
        if name.endswith("-classifier"):
            th, m = e["threshold_scorer_metrics"], e["metrics"]
            nn_rows.append(
                f"| {name} | {th['auc']['value']:.3f} / {th['asr']['value']:.3f} / {pct(th['tpr_at_1pct_fpr'])} "
                f"| {m['auc']['value']:.3f} / {m['asr']['value']:.3f} / {pct(m['tpr_at_1pct_fpr'])} "
                f"| {e['n_members']}+{e['n_nonmembers']} |"
            )
    n_img = {k: v for k, v in res[f"t{ts[0]}-n{ns[0]}"].items() if k in ("n_members", "n_nonmembers")}
    print(f"\n{n_img['n_members']} members + {n_img['n_nonmembers']} non-members, model {args.model}, "
          f"seed {args.seed}, distance {args.distance}, wall {wall:.0f} s, {args.threads} CPU threads\n")
    print("\n".join(table))
    if nn_rows:
        print("\n| entry (t=200, k=100) | threshold scorer AUC / ASR / TPR@1% | classifier AUC / ASR / TPR@1% | evaluated on |")
        print("|---|---|---|---|")
        print("\n".join(nn_rows))
    summary = {
        "model": args.model, "limit": args.limit, "seed": args.seed, "distance": args.distance,
        "k_rule": args.k_rule, "wall_seconds": round(wall, 1), "threads": args.threads,
        "machine": platform.processor() or platform.machine(), **n_img, "rows": rows,
        "classifier": {k: {"threshold": v["threshold_scorer_metrics"], "classifier": v["metrics"], "scorer": v["scorer"]}
                       for k, v in res.items() if k.endswith("-classifier")},
    }
    (out / "ablation.json").write_text(json.dumps(summary, indent=2))
    print("\nREADME form (AUC / ASR / TPR@1%FPR %):\n")
    print("| t \\ n | " + " | ".join(str(n) for n in ns) + " |")
    print("|---|" + "---|" * len(ns))
    for t in ts:
        cells = [r for r in rows if r["t"] == t]
        print(f"| {t} (k={cells[0]['k']}) | " + " | ".join(
            f"{r['auc']['value']:.3f} / {r['asr']['value']:.3f} / {pct(r['tpr_at_1pct_fpr'])}" for r in cells) + " |")
    print(f"\nwrote {out / 'ablation.json'} and the run directory {run_dir}")


if __name__ == "__main__":
    main()
