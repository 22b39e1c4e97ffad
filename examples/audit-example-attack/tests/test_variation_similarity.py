"""Tests of the example attack, written with audit-core's pytest kit (``audit_core.testing``)."""

import json

import pytest
import torch

from audit_core import hookimpl
from audit_core.testing import make_attack, make_batch
from audit_core.testing.toys import VariationOnlyTarget, ToyParams
from audit_example_attack import VariationSimilarity

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ExamplePlugin:
    @hookimpl
    def register_attacks(self, register):
        register(VariationSimilarity)


def test_scores_one_per_image_and_costs_n_queries():
    target = VariationOnlyTarget(ToyParams())
    attack = make_attack(VariationSimilarity, target, t=100, k=50, n=3)
    out = attack.score(make_batch(4, dtype=torch.float32))
    assert out.scores.shape == (4,) and torch.isfinite(out.scores).all()
    assert out.residuals.shape == (4, 1, 8, 8)  # residual_maps = True
    assert target.stats.queries == 4 * 3 and target.stats.nfe == 4 * 3 * 2


def test_bad_params_are_refused_before_scoring(toy_target):
    from audit_core import ConfigError

    with pytest.raises(ConfigError, match="k=30 must be positive and divide t=100"):
        make_attack(VariationSimilarity, toy_target, t=100, k=30)
    with pytest.raises(ConfigError, match="params.n"):
        make_attack(VariationSimilarity, toy_target, n="2")  # strict: a string is not an int
    with pytest.raises(ConfigError, match="Did you mean 'ssim'"):
        make_attack(VariationSimilarity, toy_target, distance="ssmi")


def test_runs_end_to_end_and_is_counted(isolated_plugins, register_plugin, toy_run_config, audit_cli, tmp_path):
    register_plugin(ExamplePlugin(), name="example")
    cfg = toy_run_config([{"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 2}}], target="toy-variation")
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    entry = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"]["variation-similarity"]
    assert entry["nfe_per_image"] == 4 and entry["queries_per_image"] == 2
    assert "NFE per image" not in out
