"""Copyright mode's power on the demo model: how often sets of true members are flagged, and how
often null sets are, with Bonferroni over the per-attack Mann-Whitney tests (before) and the
rank combination with its permutation p-value (``inference.combine: rank``, now).

    .venv/bin/python benchmarks/copyright_power.py [--scores tests/data/demo_scores.csv]
        [--reference 300] [--alpha 0.01] [--permutations 9999] [--seed 0]

``--scores``: a CSV with ``image_id, label (member | nonmember)`` and one score column per attack
(the default file holds the demo run's ReDiffuse (t=200, k=100, n=10, l2) and PIA (t=200, p=4)
scores of its 500 members and 500 non-members, from ``audit run audit.yaml``); or a run's
scores.csv (``--scores path/to/scores.csv``, attacks taken from its ``attack`` column).

Protocol (seeded): ``--reference`` non-members form the reference; the members are cut into 10
disjoint sets of 10 and 10 disjoint sets of 5; the remaining non-members into disjoint null sets of
10 and of 5. Every set is tested against the same reference, both ways. Prints a Markdown table and
the power figure for the per-image AUC measured on the labelled scores.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit_core.copyright import inference  # noqa: E402
from audit_core.stats import rank_test


def load(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(attack names, scores [N, m], labels [N]) from either CSV layout."""
    rows = list(csv.DictReader(path.open()))
    if "attack" in rows[0]:  # a run's scores.csv: one row per (attack, image)
        names = list(dict.fromkeys(r["attack"] for r in rows))
        by_id: dict[str, dict] = {}
        for r in rows:
            by_id.setdefault(r["image_id"], {"label": r["label"]})[r["attack"]] = float(r["score"])
        ids = [i for i, v in by_id.items() if all(n in v for n in names)]
        table = np.array([[by_id[i][n] for n in names] for i in ids])
        labels = np.array([by_id[i]["label"] == "member" for i in ids])
        return names, table, labels
    names = [c for c in rows[0] if c not in ("image_id", "label")]
    return names, np.array([[float(r[n]) for n in names] for r in rows]), np.array([r["label"] == "member" for r in rows])


def tests(table: np.ndarray, sus: np.ndarray, ref: np.ndarray, alpha: float, perms: int, seed: int) -> tuple[float, float]:
    """(Bonferroni p over per-attack Mann-Whitney tests, rank-combination permutation p)."""
    ps = {str(j): inference.set_test(table[sus, j], table[ref, j], seed)["p_value"] for j in range(table.shape[1])}
    bonf = inference.combine(ps, "bonferroni", alpha)["p_value"]
    idx = np.concatenate([sus, ref])
    flag = np.zeros(len(idx), dtype=bool)
    flag[: len(sus)] = True
    rank = rank_test.combined_rank_test(table[idx], flag, list(ps), alpha, seed, perms)["p_value"]
    return bonf, rank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "demo_scores.csv"))
    ap.add_argument("--reference", type=int, default=300)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--permutations", type=int, default=9999)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names, table, labels = load(Path(args.scores))
    rng = np.random.default_rng(args.seed)
    members = rng.permutation(np.flatnonzero(labels))
    nonmembers = rng.permutation(np.flatnonzero(~labels))
    ref, rest = nonmembers[: args.reference], nonmembers[args.reference :]
    groups = {
        "10 members": [members[10 * i : 10 * i + 10] for i in range(10)],
        "5 members": [members[100 + 5 * i : 105 + 5 * i] for i in range(10)],
        "10 non-members (null)": [rest[10 * i : 10 * i + 10] for i in range(len(rest) // 10)],
        "5 non-members (null)": [rest[5 * i : 5 * i + 5] for i in range(len(rest) // 5)],
    }
    print(f"attacks {', '.join(names)}; reference {len(ref)} non-members; alpha {args.alpha}; "
          f"{args.permutations} permutations; seed {args.seed}\n")
    print(f"| suspect set | sets | Bonferroni (per-attack Mann-Whitney): p < {args.alpha} | worst p | "
          f"rank combination (permutation): p < {args.alpha} | worst p |")
    print("|---|---|---|---|---|---|")
    for label, sets in groups.items():
        res = np.array([tests(table, s, ref, args.alpha, args.permutations, args.seed + k) for k, s in enumerate(sets)])
        hits = (res < args.alpha).sum(axis=0)
        worst = res.max(axis=0) if "null" not in label else res.min(axis=0)
        print(f"| {label} | {len(sets)} | {hits[0]} of {len(sets)} | {worst[0]:.2g} | {hits[1]} of {len(sets)} | {worst[1]:.2g} |")
    from audit_core import blind, conclusion

    auc = blind.auc(rank_test.pooled_rank_statistic(table), labels.astype(int))  # the labelled pair itself
    needed, curve = conclusion.power_curve(auc, len(ref), args.alpha, args.seed)
    print(f"\npower figure (audit_core.copyright.conclusion, never from the suspects): per-image AUC {auc:.3f} of the rank "
          f"combination on all labelled images -> about {needed} images (power by size: {curve})")
    print("(worst p: the largest p over member sets, the smallest over null sets)")


if __name__ == "__main__":
    main()
