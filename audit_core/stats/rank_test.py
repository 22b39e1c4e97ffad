"""Copyright mode's combined set-level test: several attacks, one statistic, permutation p-value.

Bonferroni (``m x`` the smallest per-attack p-value) keeps the error rate under any dependence
but throws power away when the attacks agree, which they do: on the demo, PIA and ReDiffuse rank
the images alike. Here the attacks are combined *before* testing:

1. **per-image statistic**: every attack's scores are turned into mid-ranks among *all* tested
   images (suspects and reference pooled), scaled to (0, 1), and averaged over the attacks. The
   transform uses no label, and it is a symmetric function of the pooled images, so under the
   null hypothesis (suspects and reference exchangeable: same distribution, none trained on) the
   per-image statistics stay exchangeable;
2. **set statistic**: the mean of the per-image statistic over the suspects;
3. **p-value by permutation**: the suspect labels are reassigned at random ``permutations`` times
   (seeded), and ``p = (1 + #{permuted >= observed}) / (1 + permutations)``. Under exchangeability
   this p-value is valid at every level (``P(p <= a) <= a``) whatever the dependence between the
   attacks, which is the same error control as Bonferroni's; its smallest value is
   ``1 / (1 + permutations)``.

The power figure (how many true members a set needs) is :mod:`audit_core.copyright.conclusion`'s: it
never resamples the suspects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

PERMUTATIONS = 9999


def pooled_rank_statistic(table: np.ndarray) -> np.ndarray:
    """``[N, m]`` scores of N images by m attacks (higher = member) -> ``[N]``: the mean over
    attacks of each image's pooled mid-rank, scaled to ``(0, 1)`` as ``(rank - 0.5) / N``."""
    table = np.asarray(table, dtype=np.float64)
    n = table.shape[0]
    ranks = np.stack([stats.rankdata(table[:, j]) for j in range(table.shape[1])], axis=1)
    return ((ranks - 0.5) / n).mean(axis=1)


def permutation_test(statistic: np.ndarray, suspect: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """One-sided permutation test of ``mean(statistic[suspect])``: ``{"p_value", "observed",
    "null_mean", "null_sd", "permutations"}``. Deterministic given ``seed``."""
    c = np.asarray(statistic, dtype=np.float64)
    s = np.asarray(suspect, dtype=bool)
    k, n = int(s.sum()), len(c)
    if k == 0 or k == n:
        raise ValueError("the permutation test needs at least one suspect and one reference image")
    observed = float(c[s].mean())
    rng = np.random.default_rng(seed)
    exceed, done, chunk = 0, 0, max(1, 2_000_000 // n)
    sums = []
    while done < permutations:
        b = min(chunk, permutations - done)
        idx = np.argsort(rng.random((b, n)), axis=1)[:, :k]  # b random k-subsets
        perm = c[idx].mean(axis=1)
        exceed += int((perm >= observed - 1e-12).sum())
        sums.append(perm)
        done += b
    perm = np.concatenate(sums)
    return {
        "p_value": (1 + exceed) / (1 + permutations),
        "observed": observed,
        "null_mean": float(perm.mean()),
        "null_sd": float(perm.std()),
        "permutations": permutations,
    }


def combined_rank_test(
    table: np.ndarray, suspect: np.ndarray, names: list[str], alpha: float, seed: int = 0, permutations: int = PERMUTATIONS
) -> dict[str, Any]:
    """The ``combined`` block of ``set_inference`` for ``combine: rank``: the permutation test of
    the pooled-rank statistic over ``names`` (the power figure is :mod:`audit_core.copyright.conclusion`'s)."""
    s = np.asarray(suspect, dtype=bool)
    c = pooled_rank_statistic(table)
    test = permutation_test(c, s, permutations, seed)
    return {
        "method": "rank",
        "attacks": list(names),
        "n_attacks": len(names),
        "alpha": alpha,
        "p_value": test["p_value"],
        "n_suspects": int(s.sum()),
        "n_reference": int((~s).sum()),
        "statistic": test["observed"],
        "null_mean": test["null_mean"],
        "permutations": permutations,
        "min_p_value": 1 / (1 + permutations),
        "note": (
            f"per image, the mean over {len(names)} attack(s) of its pooled rank (suspects and reference together, "
            f"no labels used); the suspects' mean compared with {permutations} seeded random relabellings. "
            f"Valid at alpha whatever the dependence between attacks (like Bonferroni), more powerful when they agree"
        ),
    }
