"""ReDiffuse states its own cost (``Attack.queries_per_image`` / ``rows_per_image`` /
``with_budget``) and the core counts what it states, never its param names: with ``n: auto`` the
memory check and copyright mode's stage-1 budget count up to ``max_n`` variations per image."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from audit_core.base.errors import ConfigError
from audit_core.plugin.prepared import queries_per_image, rows_per_image
from audit_core.run import preflight
from audit_core.testing import ToyParams, ToyTarget, make_attack, no_traceback
from audit_rediffuse import ReDiffuse

from .test_two_stage import cfg2  # noqa: F401  (a fixture)
from .test_rediffuse import rec_plugin  # noqa: F401  (a fixture)


def entry(attack):
    return SimpleNamespace(name=attack.context.name, attack=attack, params=attack.params)


def loaded(batch_size):
    return SimpleNamespace(cfg=SimpleNamespace(run=SimpleNamespace(batch_size=batch_size)), where=lambda *a: "audit.yaml:1")


@pytest.mark.parametrize(
    "params, queries",
    [({"n": 3}, 3), ({"n": "auto", "max_n": 7}, 7)],
)
def test_rediffuse_states_its_queries(params, queries):
    a = make_attack(ReDiffuse, ToyTarget(ToyParams()), t=100, k=50, **params)
    assert queries_per_image(a) == queries and rows_per_image(a) == queries


def test_with_budget_scales_an_integer_n_and_leaves_auto_alone():
    target = ToyTarget(ToyParams())
    assert make_attack(ReDiffuse, target, t=100, k=50, n=3).with_budget(4) == {"n": 12}
    assert make_attack(ReDiffuse, target, t=100, k=50, n="auto", max_n=5).with_budget(4) is None


def test_memory_check_counts_max_n_for_n_auto():
    target = ToyTarget(ToyParams())
    c, s = target.channels, target.image_size
    auto = make_attack(ReDiffuse, target, t=100, k=50, n="auto", max_n=10)
    # room for 5 variations per image: one row fits, max_n = 10 does not
    limit = preflight.estimate(4, 5, c, s)
    preflight.check_memory(loaded(4), [entry(make_attack(ReDiffuse, target, t=100, k=50, n=1))], target, limit=limit)
    with pytest.raises(ConfigError, match=r"one batch needs .* x 10 variation\(s\) per image"):
        preflight.check_memory(loaded(4), [entry(auto)], target, limit=limit)


def test_stage_one_budget_counts_max_n_for_n_auto(cfg2, audit_cli, tmp_path):  # noqa: F811
    import yaml

    path = cfg2(155)  # 26 images x (max_n 4 + n 2) = 156 rows at most in stage 1
    cfg = yaml.safe_load(path.read_text())
    cfg["attacks"] = [
        {"plugin": "rediffuse", "name": "auto", "params": {"t": 100, "k": 50, "n": "auto", "max_n": 4}},
        {"plugin": "rediffuse", "name": "fixed", "params": {"t": 100, "k": 50, "n": 2}},
    ]
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    code, output = audit_cli("run", path, "--output", out)
    assert code == 2, output
    no_traceback(output)
    flat = " ".join(output.split())
    assert "max_queries=155 is below what stage 1 alone requests: 156" in flat
    assert not out.exists()
