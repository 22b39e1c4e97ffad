"""Measure how well the four attacks separate members on a digits model (default: the demo).

    python plugins/ddim/scripts/measure_demo.py [MODEL] [--limit N] [--attacks rediffuse,loss,pia,secmi]

Uses only the ddim target, ``audit_core.ddim`` and ``audit_core.seeding`` (the same math and the
same per-image seeds as the attack plugins), on the full digits split by default, and prints the
ROC AUC of each attack (members = positives, higher score = member).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from sklearn.metrics import roc_auc_score

from audit_core import ddim, seeding
from audit_core.targets import TargetContext
from audit_ddim import digits
from audit_ddim.target import DDIMParams, DDIMTarget


def flat_sum(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(1)


def scores(target: DDIMTarget, x: torch.Tensor, ids: list[str], attack: str, run_seed: int = 0) -> torch.Tensor:
    abar = target.alphas_cumprod
    eps = target.eps_fn()
    if attack == "rediffuse":  # t=200, k=100, n=10, L2 of the mean of 10 variations
        n = 10
        seeds = [seeding.derive_seed(run_seed, "rediffuse", i, d) for i in ids for d in range(n)]
        v = target.variation(x.repeat_interleave(n, 0), 200, 100, seeds)
        x_bar = v.reshape(len(ids), n, *x.shape[1:]).mean(1)
        return -flat_sum((x - x_bar) ** 2)
    if attack == "loss":  # t=200
        z = seeding.randn(x.shape[1:], [seeding.derive_seed(run_seed, "naive-loss", i) for i in ids])
        x_t = ddim.q_sample(x, z, ddim.abar_at(abar, 200))
        return -flat_sum((eps(x_t, 200) - z) ** 2)
    if attack == "pia":  # t=200, p=4
        e0 = eps(x, 0)
        x_t = ddim.q_sample(x, e0, ddim.abar_at(abar, 200))
        return -flat_sum((eps(x_t, 200) - e0).abs() ** 4)
    if attack == "secmi":  # t_sec=100, k=10
        x_tilde = ddim.invert(eps, x, 90, 10, abar)
        x_t = ddim.step(eps, x_tilde, 90, 100, abar)
        x_hat = ddim.step(eps, x_t, 100, 90, abar)
        return -flat_sum((x_hat - x_tilde) ** 2)
    raise ValueError(attack)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="builtin:digits-ddpm")
    ap.add_argument("--limit", type=int, default=None, help="at most this many of each group")
    ap.add_argument("--attacks", default="rediffuse,loss,pia,secmi")
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
        start, nfe0 = time.perf_counter(), target.stats.nfe
        s = torch.cat([scores(target, x[i : i + args.batch], ids[i : i + args.batch], attack) for i in range(0, len(ids), args.batch)])
        out[attack] = {
            "auc": round(float(roc_auc_score(labels, s.numpy())), 4),
            "nfe_per_image": (target.stats.nfe - nfe0) / len(ids),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(attack, out[attack], flush=True)
    print(json.dumps({"model": args.model, "n_members": sum(labels), "n_nonmembers": len(labels) - sum(labels), "attacks": out}))


if __name__ == "__main__":
    main()
