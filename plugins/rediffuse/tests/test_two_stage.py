"""Copyright mode's second stage (``inference.max_queries``, :mod:`audit_core.copyright.two_stage`) through the
runner, with ReDiffuse on the recording test target: the budget is checked before the first query,
stage 2 rescores the suspects and a seeded matched share of the reference with more draws (whose
first draws are stage 1's), the whole run stays within the budget, and two runs give the same
files. The error control is checked on simulated null sets in tests/test_two_stage.py."""

from __future__ import annotations

import csv
import json

import pytest

from audit_core.copyright import two_stage
from audit_core.testing import no_traceback

from .test_rediffuse import rec_plugin  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cfg2(rec_plugin, image_folder, write_config):  # noqa: F811
    suspects = image_folder("suspects", n=6, seed=1)
    reference = image_folder("reference", n=20, seed=2)

    def make(max_queries, undecided=0.99, **inference):
        return write_config({
            "run": {"name": "two-stage", "seed": 0, "device": "cpu", "batch_size": 5},
            "target": {"plugin": "rec-variation"},
            "data": {"suspects": str(suspects), "reference": str(reference)},
            "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 2}}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
            "inference": {"alpha": 0.01, "max_queries": max_queries, "undecided": undecided, "permutations": 999, **inference},
        })

    return make


def results(out):
    return json.loads((out / "results.json").read_text())


def requested(res) -> int:
    """Variation rows the run requested, all entries (cache hits included)."""
    return round(sum(e["queries_per_image"] * (e["n_members"] + e["n_nonmembers"]) for e in res["attacks"].values()))


def test_a_budget_below_stage_one_is_refused_before_any_query(cfg2, audit_cli, tmp_path):
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg2(51), "--output", out)  # stage 1: 2 draws x 26 images = 52
    assert code == 2, output
    no_traceback(output)
    flat = " ".join(output.split())
    assert "inference.max_queries" in flat and "max_queries=51 is below what stage 1 alone requests: 52" in flat
    assert not out.exists()  # nothing written, nothing queried


def test_max_queries_is_refused_in_evaluation_mode(rec_plugin, image_folder, write_config, audit_cli, tmp_path):  # noqa: F811
    cfg = write_config({
        "run": {"name": "x", "seed": 0, "device": "cpu"}, "target": {"plugin": "rec-variation"},
        "data": {"members": str(image_folder("m", n=4, seed=1)), "nonmembers": str(image_folder("n", n=4, seed=2))},
        "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 2}}],
        "inference": {"max_queries": 1000},
    })
    code, output = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 2 and "apply to copyright mode" in " ".join(output.split())
    no_traceback(output)


def test_stage_two_rescores_suspects_and_a_matched_share_within_the_budget(cfg2, audit_cli, tmp_path):
    # stage 1: 52 rows; stage 2: n=4 per rescored image: 6 suspects + share, share = min(20, 110 // 4 - 6) = 20
    # with max_queries 152; with 111 the share is 111 - 52 = 59 -> 14 images -> 8 reference images
    out = tmp_path / "run"
    code, output = audit_cli("run", cfg2(111), "--output", out)
    assert code == 0, output
    res = results(out)
    comb = res["set_inference"]["combined"]
    ts = comb["two_stage"]
    assert ts["stage2_ran"] and ts["stage2_reference_share"] == 8 and ts["stage2_n"] == {"rediffuse+stage2": 4}
    assert ts["stage1_queries"] == 52 and ts["stage2_queries_at_most"] == 56
    assert comb["p_value"] == pytest.approx(min(1, 2 * min(ts["p_stage1"], ts["p_stage2"])))
    e2 = res["attacks"]["rediffuse+stage2"]
    assert (e2["n_suspects"] if "n_suspects" in e2 else e2["n_members"]) == 6
    assert e2["n_nonmembers"] == 8 and e2["queries_per_image"] == 4
    assert requested(res) <= 111
    # the first 2 of stage 2's 4 draws are stage 1's: served by the run-local cache, not paid again
    assert e2["cache_hits"] == 2 * 14 and e2["spent"]["queries"] == 2 * 14
    # the share is the seeded hash choice, independent of scores
    rows = list(csv.DictReader((out / "scores.csv").open()))
    share = [r["image_id"] for r in rows if r["attack"] == "rediffuse+stage2" and r["label"] == "reference"]
    ref_ids = [r["image_id"] for r in rows if r["attack"] == "rediffuse" and r["label"] == "reference"]
    assert share == two_stage.reference_share(ref_ids, 8, 0)
    # reproducible: a second run gives the same files
    again = tmp_path / "again"
    code, output = audit_cli("run", cfg2(111), "--output", again)
    assert code == 0, output
    assert (again / "scores.csv").read_text() == (out / "scores.csv").read_text()
    assert results(again)["set_inference"]["combined"]["p_value"] == comb["p_value"]


def test_no_stage_two_when_decided_or_not_promising_or_unaffordable(cfg2, audit_cli, tmp_path):
    # 103: 51 rows left after stage 1, 4 per rescored image -> 12 images: the 6 suspects + 6 reference
    code, output = audit_cli("run", cfg2(103), "--output", tmp_path / "just")
    assert code == 0, output
    ts = results(tmp_path / "just")["set_inference"]["combined"]["two_stage"]
    assert ts["stage2_reference_share"] == 6 and ts["stage2_queries_at_most"] == 48
    code, output = audit_cli("run", cfg2(99), "--output", tmp_path / "tight")  # 47 left < 48 for 6 + 6
    assert code == 0, output
    res = results(tmp_path / "tight")
    ts = res["set_inference"]["combined"]["two_stage"]
    assert not ts["stage2_ran"] and "no second stage" in ts["why_no_stage2"] and "max_queries >= 100" in ts["why_no_stage2"]
    assert "rediffuse+stage2" not in res["attacks"]
    assert res["set_inference"]["combined"]["p_value"] == pytest.approx(min(1, 2 * ts["p_stage1"]))
    code, output = audit_cli("run", cfg2(1000, undecided=0.011), "--output", tmp_path / "hopeless")
    assert code == 0, output
    ts = results(tmp_path / "hopeless")["set_inference"]["combined"]["two_stage"]
    if ts["p_stage1"] > 0.011:
        assert not ts["stage2_ran"] and "not promising" in ts["why_no_stage2"]
