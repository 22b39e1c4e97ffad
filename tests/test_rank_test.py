"""Copyright mode's combined rank test (audit_core.stats.rank_test): the statistic uses no labels, the
permutation p-value matches exact enumeration and keeps its level under dependent attacks, it is
more powerful than Bonferroni when attacks agree. (The power figure is tested in test_conclusion.py.)"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from audit_core.copyright import inference
from audit_core.stats import rank_test


def test_pooled_rank_statistic_is_label_free_and_symmetric():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(30, 3))
    c = rank_test.pooled_rank_statistic(table)
    perm = rng.permutation(30)
    np.testing.assert_allclose(rank_test.pooled_rank_statistic(table[perm]), c[perm])
    # one attack: the scaled mid-ranks themselves
    np.testing.assert_allclose(rank_test.pooled_rank_statistic(table[:, :1]), (stats.rankdata(table[:, 0]) - 0.5) / 30)


def test_permutation_p_value_matches_exact_enumeration():
    c = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.6])
    suspect = np.array([1, 0, 0, 1, 0, 0, 0], dtype=bool)
    obs = c[suspect].mean()
    subsets = [c[list(s)].mean() for s in itertools.combinations(range(7), 2)]
    exact = np.mean([m >= obs - 1e-12 for m in subsets])
    res = rank_test.permutation_test(c, suspect, permutations=20_000, seed=1)
    assert res["p_value"] == pytest.approx(exact, abs=0.01)
    assert res["p_value"] == rank_test.permutation_test(c, suspect, permutations=20_000, seed=1)["p_value"]


def test_level_kept_under_strongly_dependent_attacks():
    """300 null data sets, two attacks correlated at 0.9: p <= 0.05 in at most the binomial 99.9 %
    bound of 300 x 0.05 cases."""
    rng = np.random.default_rng(2)
    hits = 0
    for i in range(300):
        base = rng.normal(size=60)
        table = np.stack([base + 0.33 * rng.normal(size=60), base + 0.33 * rng.normal(size=60)], axis=1)
        suspect = np.zeros(60, dtype=bool)
        suspect[:8] = True
        hits += rank_test.permutation_test(rank_test.pooled_rank_statistic(table), suspect, 499, seed=i)["p_value"] <= 0.05
    assert hits <= stats.binom.ppf(0.999, 300, 0.05)
    assert hits >= stats.binom.ppf(0.001, 300, 0.05)  # not conservative to the point of uselessness


def test_more_powerful_than_bonferroni_when_attacks_agree():
    """Two agreeing attacks with a weak effect: the rank test flags more member sets at 1 % than
    Bonferroni over the per-attack Mann-Whitney tests."""
    rng = np.random.default_rng(3)
    rank_hits = bonf_hits = 0
    for i in range(60):
        shared = rng.normal(size=310)
        shared[:10] += 0.9  # 10 members
        table = np.stack([shared + rng.normal(size=310), shared + rng.normal(size=310)], axis=1)
        suspect = np.zeros(310, dtype=bool)
        suspect[:10] = True
        rank_hits += rank_test.combined_rank_test(table, suspect, ["a", "b"], 0.01, seed=i, permutations=999)["p_value"] <= 0.01
        ps = {n: inference.set_test(table[suspect, j], table[~suspect, j])["p_value"] for j, n in enumerate("ab")}
        bonf_hits += inference.combine(ps, "bonferroni", 0.01)["p_value"] <= 0.01
    assert rank_hits > bonf_hits


def test_null_rate_on_100_disjoint_splits_of_the_demo_non_members():
    """The demo's 500 non-members (ReDiffuse and PIA scores of `audit run audit.yaml`, stored in
    tests/data/demo_scores.csv): 100 disjoint suspect sets of 5, each tested against the other
    495. The rate of p <= alpha stays within the binomial 99.9 % bound at alpha = 0.05 and 0.1."""
    import csv
    from pathlib import Path

    rows = [r for r in csv.DictReader((Path(__file__).parent / "data" / "demo_scores.csv").open()) if r["label"] == "nonmember"]
    table = np.array([[float(r["rediffuse"]), float(r["pia"])] for r in rows])
    order = np.random.default_rng(0).permutation(len(table))
    ps = []
    for k in range(100):
        suspect = np.zeros(len(table), dtype=bool)
        suspect[order[5 * k : 5 * k + 5]] = True
        ps.append(rank_test.combined_rank_test(table, suspect, ["rediffuse", "pia"], 0.05, seed=k, permutations=999)["p_value"])
    ps = np.array(ps)
    for alpha in (0.05, 0.1):
        assert (ps <= alpha).sum() <= stats.binom.ppf(0.999, 100, alpha), (alpha, np.sort(ps)[:10])
    assert stats.kstest(ps, "uniform").pvalue > 0.001  # roughly uniform under the null
