"""The core counts what an attack states about its cost (``queries_per_image``,
``rows_per_image``, ``with_budget``), never its param names (issue 29, item 3): an attack whose
params are called nothing like ``n``/``draws`` gets the right memory check and query budget, and
one whose ``n`` means something else is not miscounted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from audit_core.base.errors import ConfigError
from audit_core.plugin.attacks import Attack, AttackOutput, AttackParams
from audit_core.plugin.prepared import PreparedAttack
from audit_core.plugin.targets import VARIATION
from audit_core.run import preflight
from audit_core.testing import ToyParams, ToyTarget, make_attack


class SpendParams(AttackParams):
    budget: int = 6  # variation queries per image, under a name the core has never heard of


class Spend(Attack):
    name = "spend"
    requires = frozenset({VARIATION})
    Params = SpendParams

    def queries_per_image(self):
        return self.params.budget

    def with_budget(self, factor):
        return {"budget": self.params.budget * factor}

    def score(self, batch):
        return AttackOutput(scores=torch.zeros(len(batch)))


class DecoyParams(AttackParams):
    n: int = 50  # a number of something that is not variations
    draws: int = 50
    variant: str = "latent"
    latent_reference: bool = True


class Decoy(Spend):
    name = "decoy"
    Params = DecoyParams

    def queries_per_image(self):
        return 1

    def with_budget(self, factor):
        return None


def loaded(batch_size):
    return SimpleNamespace(cfg=SimpleNamespace(run=SimpleNamespace(batch_size=batch_size)), where=lambda *a: "audit.yaml:1")


def entry(attack):
    return SimpleNamespace(name=attack.context.name, attack=attack, params=attack.params, cfg=SimpleNamespace(learned=False))


def test_memory_check_counts_the_stated_rows_not_param_names():
    target = ToyTarget(ToyParams())
    c, s = target.channels, target.image_size
    limit = preflight.estimate(4, 5, c, s)  # room for 5 rows per image
    preflight.check_memory(loaded(4), [entry(make_attack(Decoy, target))], target, limit=limit)  # n=50 is not read
    with pytest.raises(ConfigError, match=r"x 6 variation\(s\) per image"):
        preflight.check_memory(loaded(4), [entry(make_attack(Spend, target))], target, limit=limit)


def test_second_stage_budget_counts_the_stated_queries():
    from audit_core.copyright import rescore

    target = ToyTarget(ToyParams())
    attacks = [make_attack(Spend, target, name="spend"), make_attack(Decoy, target, name="decoy")]
    prepared = [PreparedAttack(SimpleNamespace(learned=False, key=a.context.name), a.context.name, type(a), a.params, a, a.context.name)
                for a in attacks]
    records = [SimpleNamespace(id=f"s{i}", label=1) for i in range(4)] + [SimpleNamespace(id=f"r{i}", label=0) for i in range(8)]
    inf = SimpleNamespace(max_queries=10_000, stage2_factor=2, undecided=0.2, alpha=0.05)
    stage = rescore.plan_second_stage(
        inference=inf, mode="copyright", records=records, attacks=prepared, target=target, run_seed=0,
        where="inference.max_queries (audit.yaml, line 1)",
    )
    assert stage.plan.stage1_queries == 12 * (6 + 1)  # what each attack states, 12 images
    assert [pa.name for pa in stage.entries] == ["spend+stage2"] and stage.entries[0].params.budget == 12
    assert stage.plan.attacks == {"spend+stage2": 12}
