"""The two-stage rule of copyright mode (:mod:`audit_core.copyright.two_stage`): the plan and its budget, the
seeded reference share, and the error control of ``min(1, 2 min(p1, p2))`` on simulated null sets
(suspects and reference exchangeable, stage 2 a less noisy rescoring of a matched share), against
the naive rule that tests both looks at alpha and does inflate the rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit_core.stats import rank_test
from audit_core.copyright import two_stage


def test_plan_budget_share_and_refusal():
    plan = two_stage.make_plan(
        max_queries=1000, stage1_queries=600, stage2_rows={"rediffuse+stage2": (20, 20)}, n_suspects=5,
        n_reference=300, factor=2, undecided=0.2, where="inference.max_queries",
    )
    assert plan.feasible and plan.n_reference_share == 400 // 20 - 5 == 15 and plan.stage2_queries == 400
    assert plan.stage1_queries + plan.stage2_queries <= 1000
    small = two_stage.make_plan(
        max_queries=790, stage1_queries=600, stage2_rows={"r": (20, 20)}, n_suspects=5, n_reference=300, factor=2,
        undecided=0.2, where="w",
    )
    assert not small.feasible and small.stage2_queries == 0 and "max_queries >= 800" in small.note
    capped = two_stage.make_plan(
        max_queries=10**6, stage1_queries=600, stage2_rows={"r": (20, 20)}, n_suspects=5, n_reference=30, factor=2,
        undecided=0.2, where="w",
    )
    assert capped.n_reference_share == 30  # never more than the reference
    with pytest.raises(ValueError, match="max_queries=599 is below what stage 1 alone requests: 600"):
        two_stage.make_plan(max_queries=599, stage1_queries=600, stage2_rows={"r": (20, 20)}, n_suspects=5,
                            n_reference=300, factor=2, undecided=0.2, where="w")


def test_reference_share_is_seeded_and_ignores_order_and_scores():
    ids = [f"ref{i:03d}" for i in range(50)]
    a = two_stage.reference_share(ids, 10, run_seed=0)
    assert len(a) == 10 and a == [i for i in ids if i in set(a)]  # record order kept
    assert set(two_stage.reference_share(ids[::-1], 10, run_seed=0)) == set(a)  # order does not choose
    assert set(two_stage.reference_share(ids, 10, run_seed=1)) != set(a)  # the run seed does


def test_decision_and_p_value():
    assert not two_stage.undecided(0.004, alpha=0.01, upper=0.2)  # decided: 2 x 0.004 <= 0.01
    assert two_stage.undecided(0.006, alpha=0.01, upper=0.2) and two_stage.undecided(0.2, 0.01, 0.2)
    assert not two_stage.undecided(0.21, alpha=0.01, upper=0.2)
    assert two_stage.two_stage_p(0.006, None) == pytest.approx(0.012)
    assert two_stage.two_stage_p(0.006, 0.001) == pytest.approx(0.002) and two_stage.two_stage_p(0.7, 0.9) == 1.0


def _null_rates(reps: int, alpha: float, upper: float, seed: int = 0) -> tuple[float, float]:
    """Rejection rates of the two-stage rule and of the naive one (each look at alpha) over
    ``reps`` null data sets: 10 suspects and 60 reference images from one distribution; stage 1
    scores = value + noise (sd 1), stage 2 = the same value + less noise (sd 0.4, its own draws
    correlated with stage 1's), on the suspects and a 20-image share of the reference."""
    rng = np.random.default_rng(seed)
    n_s, n_r, share = 10, 60, 20
    two, naive = 0, 0
    for r in range(reps):
        value = rng.normal(size=n_s + n_r)
        e1 = rng.normal(size=n_s + n_r)
        s1 = value + e1
        s2 = value + 0.4 * (0.5 * e1 + math.sqrt(0.75) * rng.normal(size=n_s + n_r))
        sus = np.r_[np.ones(n_s, bool), np.zeros(n_r, bool)]
        stat1 = rank_test.pooled_rank_statistic(s1[:, None])
        p1 = rank_test.permutation_test(stat1, sus, permutations=199, seed=r)["p_value"]
        p2 = None
        if two_stage.undecided(p1, alpha, upper):
            keep = np.r_[np.arange(n_s), n_s + np.arange(share)]  # a share fixed without looking at scores
            stat2 = rank_test.pooled_rank_statistic(s2[keep][:, None])
            p2 = rank_test.permutation_test(stat2, sus[keep], permutations=199, seed=r + 10**6)["p_value"]
        two += two_stage.two_stage_p(p1, p2) <= alpha
        naive += p1 <= alpha or (p1 <= upper and p2 is not None and p2 <= alpha)
    return two / reps, naive / reps


def test_two_stage_rule_keeps_the_false_positive_rate_and_the_naive_rule_does_not():
    reps, alpha = 2000, 0.1
    two, naive = _null_rates(reps, alpha, upper=0.6)
    sd = math.sqrt(alpha * (1 - alpha) / reps)
    assert two <= alpha + 3 * sd  # 3 sd above alpha: a binomial bound exceeded with probability ~0.1 %
    assert naive > alpha + 3 * sd  # the check can fail: looking twice at alpha inflates the rate
