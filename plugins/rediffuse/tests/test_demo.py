"""rediffuse on the embedded demo (``builtin:digits-ddpm``, trained on ``builtin:digits/members``):
the defaults separate members from non-members, averaging helps (n=10 beats n=1 on the same
draws), and the learned scorer's TPR@1%FPR is reported beside the threshold scorer's.

One audit run (module fixture) serves every test: the n=1 and classifier entries share the
default entry's ``seed_key``, so the query cache answers them from its draws (paired comparison,
no extra U-Net calls). Skipped when the ddim plugin or its demo model is not installed."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from audit_core.testing import invoke

N = 150  # members and non-members each (the first N of each subset)
#: another digits model folder (e.g. a training checkpoint) may stand in for the demo model
MODEL = os.environ.get("REDIFFUSE_DEMO_MODEL", "builtin:digits-ddpm")

audit_ddim = pytest.importorskip("audit_ddim", reason="audit-ddim (the demo model's plugin) is not installed")


def _demo_missing() -> str | None:
    try:
        from audit_ddim import loading

        path = loading.resolve_model_path(MODEL)
        if not (path / "model_index.json").exists():
            return f"{MODEL} is not a diffusers pipeline folder"
    except Exception as exc:  # ImportError, ModelError (not trained/shipped yet), ...
        return f"the demo model {MODEL} is not available: {exc}"
    return None


_why = _demo_missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("rediffuse-demo")
    shared = {"plugin": "rediffuse", "seed_key": "default"}
    cfg = {
        "run": {"name": "rediffuse-demo", "seed": 0, "device": "cpu", "batch_size": 150},
        "target": {"plugin": "ddim", "model": MODEL},
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": N},
        "attacks": [
            {**shared, "name": "default"},  # t=200, k=100, n=10, l2 from defaults_for
            {**shared, "name": "n1", "params": {"n": 1}},
            {**shared, "name": "classifier", "scorer": "classifier"},
        ],
        "cache": {"enabled": True, "dir": str(tmp / "cache")},
        "metrics": {"bootstrap": 200},
    }
    path = tmp / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, output = invoke(["run", str(path), "--output", str(tmp / "run")])
    assert code == 0, output
    return json.loads((tmp / "run" / "results.json").read_text())["attacks"]


def auc(entry: dict) -> float:
    return entry["metrics"]["auc"]["value"]


def test_defaults_are_well_above_chance(demo_results):
    e = demo_results["default"]
    assert (e["params"]["t"], e["params"]["k"], e["params"]["n"], e["params"]["distance"]) == (200, 100, 10, "l2")
    assert e["variant"] == "pixel"
    assert e["queries_per_image"] == 10 and e["nfe_per_image"] == 20
    assert e["n_members"] == N and e["n_nonmembers"] == N
    print(f"\nrediffuse defaults on {N}+{N} demo images: AUC {auc(e):.3f}, ASR {e['metrics']['asr']['value']:.3f}, "
          f"TPR@1%FPR {e['metrics']['tpr_at_1pct_fpr']['value']:.3f}, {e['seconds_per_100_images']:.1f} s/100 images")
    assert auc(e) > 0.7
    assert e["metrics"]["auc"]["ci95"][0] > 0.6  # the bootstrap interval stays clear of chance


def test_averaging_helps(demo_results):
    """n=10 beats n=1 on the same images and the same first draw (paired)."""
    n10, n1 = demo_results["default"], demo_results["n1"]
    assert n1["cache_hits"] == 2 * N  # n=1 reused n=10's first draws
    print(f"\nAUC n=10 {auc(n10):.3f} vs n=1 {auc(n1):.3f}")
    assert auc(n10) > auc(n1) + 0.05  # paired: checkpoints of the demo recipe gave +0.13 to +0.15


def test_learned_scorer_reported_beside_threshold(demo_results):
    e = demo_results["classifier"]
    assert e["scorer"]["kind"] == "classifier"
    n_cal = e["scorer"]["n_calibration"]
    assert n_cal == round(0.2 * N) * 2
    assert e["n_members"] + e["n_nonmembers"] == 2 * N - n_cal  # metrics on the held-out 80 % only
    nn, th = e["metrics"], e["threshold_scorer_metrics"]
    print(f"\nTPR@1%FPR classifier {nn['tpr_at_1pct_fpr']['value']:.3f} vs threshold {th['tpr_at_1pct_fpr']['value']:.3f}; "
          f"AUC {nn['auc']['value']:.3f} vs {th['auc']['value']:.3f}")
    for m in (nn, th):
        assert 0.0 <= m["tpr_at_1pct_fpr"]["value"] <= 1.0
    assert nn["auc"]["value"] > 0.6  # the classifier learned something from 20 % of the images
