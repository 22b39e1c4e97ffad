"""Measure how well the four attacks separate members on a digits model (default: the demo).

    python plugins/ddim/scripts/measure_demo.py [MODEL] [--limit N] [--attacks rediffuse,naive-loss,pia,secmia]

Scores the full digits split (by default) with the installed attack plugins themselves, at their
default params and with the per-image seeds a run would use, and prints the ROC AUC of each
attack (members = positives, higher score = member). No run directory is written.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from sklearn.metrics import roc_auc_score

from audit_core.plugin import factory, manager as plugins
from audit_core.plugin.attacks import AttackContext, Batch
from audit_core.plugin.targets import TargetContext
from audit_ddim import digits
from audit_ddim.target import DDIMParams, DDIMTarget


def make_attack(name: str, target: DDIMTarget, run_seed: int = 0):
    """The registered attack ``name`` at its defaults for ``target``, as a run would build it."""
    cls = factory.lookup("attacks", name)
    attack = cls(
        cls.Params.model_validate(cls.defaults_for(target)), target,
        AttackContext(name=name, seed_key=name, run_seed=run_seed, distances=plugins.registry("distances")),
    )
    attack.check()
    return attack


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="builtin:digits-ddpm")
    ap.add_argument("--limit", type=int, default=None, help="at most this many of each group")
    ap.add_argument("--attacks", default="rediffuse,naive-loss,pia,secmia")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    target = DDIMTarget(DDIMParams(model=args.model), TargetContext(device="cpu"))
    groups = {}
    for g in ("members", "nonmembers"):
        idx = digits.indices(g)[: args.limit]
        groups[g] = (digits.as_tensor(g)[: len(idx)], [digits.image_id(i) for i in idx])
    x = torch.cat([groups["members"][0], groups["nonmembers"][0]])
    ids = groups["members"][1] + groups["nonmembers"][1]
    labels = [1] * len(groups["members"][1]) + [0] * len(groups["nonmembers"][1])
    out = {}
    for attack in args.attacks.split(","):
        a = make_attack(attack, target)
        start, nfe0 = time.perf_counter(), target.stats.nfe
        s = torch.cat([
            a.score(Batch(images=x[i : i + args.batch], ids=ids[i : i + args.batch], captions=[None] * len(ids[i : i + args.batch]),
                          run_seed=0, seed_key=attack)).scores
            for i in range(0, len(ids), args.batch)
        ])
        out[attack] = {
            "auc": round(float(roc_auc_score(labels, s.numpy())), 4),
            "nfe_per_image": (target.stats.nfe - nfe0) / len(ids),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(attack, out[attack], flush=True)
    print(json.dumps({"model": args.model, "n_members": sum(labels), "n_nonmembers": len(labels) - sum(labels), "attacks": out}))


if __name__ == "__main__":
    main()
