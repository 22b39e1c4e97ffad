"""Copyright mode's budgeted second stage (``inference.max_queries``) on the demo model: how often
small suspect sets are flagged with stage 1 alone, with the two-stage rule, and with the larger n
for every image, and what each costs in queries.

    .venv/bin/python plugins/rediffuse/scripts/adaptive_draws.py --out /tmp/adaptive-draws.npz
    .venv/bin/python benchmarks/copyright_two_stage.py /tmp/adaptive-draws.npz [--n1 2] [--factor 2]
        [--set-size 3] [--share 100] [--reference 300] [--alpha 0.01] [--undecided 0.2]

The recording holds every demo image's first 10 ReDiffuse draws (t=200, k=100, per-image seeded),
so an n-draw score is the distance to the mean of the first n draws, exactly what a run with that n
computes. Protocol (seeded): ``--reference`` non-members form the reference; the members are cut
into disjoint suspect sets of ``--set-size``, the other non-members into disjoint null sets of the
same size. Each set is tested like ``audit run`` does with ReDiffuse alone (the rank permutation
test, 9,999 relabellings):

- *stage 1 only*: n = n1 for every image, reject at p <= alpha (no budget, one look);
- *two-stage* (:mod:`audit_core.copyright.two_stage`): stage 1 at n1; when alpha/2 < p1 <= undecided, the
  suspects and a seeded share of ``--share`` reference images are rescored with n1 x factor and
  retested; reject when min(1, 2 min(p1, p2)) <= alpha. Its budget is ``max_queries`` = stage 1 +
  (suspects + share) x n1 x factor;
- *all at n2*: n = n1 x factor for every image, one look.

Queries are variation rows requested per set (reference included), as the budget counts them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit_core.stats import rank_test  # noqa: E402
from audit_core.copyright import two_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("draws", nargs="?", default="/tmp/adaptive-draws.npz")
    ap.add_argument("--n1", type=int, default=2)
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--set-size", type=int, default=3)
    ap.add_argument("--share", type=int, default=100)
    ap.add_argument("--reference", type=int, default=300)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--undecided", type=float, default=0.2)
    ap.add_argument("--permutations", type=int, default=9999)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n1, n2, k = args.n1, args.n1 * args.factor, args.set_size
    d = np.load(args.draws)
    x, v, y, ids = d["x"].astype(np.float64), d["draws"].astype(np.float64), d["labels"], [str(i) for i in d["ids"]]
    N = len(y)
    x, v = x.reshape(N, -1), v.reshape(N, v.shape[1], -1)
    score = {n: -((x - v[:, :n].mean(1)) ** 2).sum(-1) for n in (n1, n2)}  # higher = member

    rng = np.random.default_rng(args.seed)
    non, mem = rng.permutation(np.flatnonzero(y == 0)), rng.permutation(np.flatnonzero(y == 1))
    ref = non[: args.reference]
    share = [ids.index(i) for i in two_stage.reference_share([ids[j] for j in ref], args.share, args.seed)]
    kinds = {
        f"{k} members": [mem[i : i + k] for i in range(0, len(mem) - k + 1, k)][:40],
        f"{k} non-members (null)": [non[args.reference:][i : i + k] for i in range(0, N // 2 - args.reference - k + 1, k)][:40],
    }

    def p_of(n: int, sus: np.ndarray, refs, seed: int) -> float:
        idx = np.r_[sus, refs]
        stat = rank_test.pooled_rank_statistic(score[n][idx][:, None])
        flag = np.r_[np.ones(len(sus), bool), np.zeros(len(refs), bool)]
        return rank_test.permutation_test(stat, flag, args.permutations, seed)["p_value"]

    stage1_q = n1 * (k + args.reference)
    max_q = stage1_q + n2 * (k + args.share)
    print(f"ReDiffuse t=200 k=100 l2; reference {args.reference} non-members; n1={n1}, n2={n2}; alpha {args.alpha}; "
          f"undecided <= {args.undecided}; max_queries {max_q} per set\n")
    print("| suspect set | sets | stage 1 only (n1), flagged | two-stage, flagged | stage 2 ran | queries per set, two-stage (mean) "
          "| all at n2, flagged | queries per set: stage 1 only / all at n2 |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, sets in kinds.items():
        one = two = ran = all2 = 0
        spent = []
        for j, s in enumerate(sets):
            p1 = p_of(n1, s, ref, args.seed + j)
            one += p1 <= args.alpha
            p2, q = None, stage1_q
            if two_stage.undecided(p1, args.alpha, args.undecided):
                p2 = p_of(n2, s, share, args.seed + 10**6 + j)
                ran += 1
                q += n2 * (k + len(share))
            two += two_stage.two_stage_p(p1, p2) <= args.alpha
            spent.append(q)
            all2 += p_of(n2, s, ref, args.seed + j) <= args.alpha
        m = len(sets)
        print(f"| {kind} | {m} | {one} of {m} | {two} of {m} | {ran} | {np.mean(spent):.0f} | {all2} of {m} "
              f"| {stage1_q} / {n2 * (k + args.reference)} |")


if __name__ == "__main__":
    main()
