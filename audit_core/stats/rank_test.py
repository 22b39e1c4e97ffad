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

The **power estimate** answers "would a set of ``n`` true members be flagged?". It resamples sets
of ``n`` images from the suspects (assumed members: an optimistic estimate when only some are) and
tests each against the reference with the normal approximation of the same permutation
distribution; the smallest ``n`` at which at least ``target`` (80 %) of the resampled sets reach
``p <= alpha`` is reported.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

PERMUTATIONS = 9999
#: set sizes tried by the power estimate (the first at which the target power is reached is reported)
POWER_SIZES = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500)
POWER_TARGET = 0.8
POWER_DRAWS = 400


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


def normal_p_value(sets: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The normal approximation of :func:`permutation_test`'s p-value for each row of ``sets``
    ``[D, k]`` (a set of k suspects' statistics) tested against ``reference`` ``[n_ref]``: the
    suspects' mean against the permutation distribution of a k-subset mean of the pooled
    ``n_ref + k`` values (finite-population variance)."""
    sets = np.atleast_2d(np.asarray(sets, dtype=np.float64))
    ref = np.asarray(reference, dtype=np.float64)
    k, n = sets.shape[1], len(ref) + sets.shape[1]
    total = ref.sum() + sets.sum(axis=1)
    total_sq = (ref**2).sum() + (sets**2).sum(axis=1)
    mu = total / n
    var = np.maximum(total_sq / n - mu**2, 1e-300)
    sd = np.sqrt(var / k * (n - k) / max(n - 1, 1))
    return stats.norm.sf((sets.mean(axis=1) - mu) / sd)


def power_estimate(
    suspect_stat: np.ndarray,
    reference_stat: np.ndarray,
    alpha: float,
    seed: int = 0,
    target: float = POWER_TARGET,
    draws: int = POWER_DRAWS,
) -> dict[str, Any]:
    """The smallest set size at which resampled sets of suspects reach ``p <= alpha`` in at least
    ``target`` of ``draws`` draws, with the power at every size tried (see the module notes)."""
    sus = np.asarray(suspect_stat, dtype=np.float64)
    ref = np.asarray(reference_stat, dtype=np.float64)
    rng = np.random.default_rng(seed)
    curve: dict[str, float] = {}
    smallest = None
    for k in POWER_SIZES:
        picks = sus[rng.integers(0, len(sus), size=(draws, k))]  # sets of k suspects, with replacement
        p = normal_p_value(picks, ref)
        power = float((p <= alpha).mean())
        curve[str(k)] = round(power, 3)
        if power >= target:
            smallest = k
            break
    return {
        "smallest_set_size": smallest,
        "target_power": target,
        "alpha": alpha,
        "power_by_set_size": curve,
        "note": (
            f"sets of suspects resampled ({draws} per size) and tested against the {len(ref)} reference images; "
            f"this assumes the suspects are training members, so it is optimistic when only some are"
            + ("" if smallest is not None else f"; not reached up to {POWER_SIZES[-1]} images")
        ),
    }


def combined_rank_test(
    table: np.ndarray, suspect: np.ndarray, names: list[str], alpha: float, seed: int = 0, permutations: int = PERMUTATIONS
) -> dict[str, Any]:
    """The ``combined`` block of ``set_inference`` for ``combine: rank``: the permutation test of
    the pooled-rank statistic over ``names`` and the power estimate."""
    s = np.asarray(suspect, dtype=bool)
    c = pooled_rank_statistic(table)
    test = permutation_test(c, s, permutations, seed)
    power = power_estimate(c[s], c[~s], alpha, seed)
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
        "power": power,
        "note": (
            f"per image, the mean over {len(names)} attack(s) of its pooled rank (suspects and reference together, "
            f"no labels used); the suspects' mean compared with {permutations} seeded random relabellings. "
            f"Valid at alpha whatever the dependence between attacks (like Bonferroni), more powerful when they agree"
        ),
    }
