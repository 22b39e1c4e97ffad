"""Tests of the ensemble plugin: the combiners against independent computations, fitting on the
calibration rows only (changing held-out rows changes nothing fitted), and a toy run end to end
(scores.csv rows, split column, components compared on the same held-out images, config errors)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from audit_ensemble import Ensemble, EnsembleParams
from audit_ensemble.attack import fit_logistic, mid_ranks

from audit_core.attacks import AttackContext
from audit_core.scorer import calibration_split
from audit_core.testing import ToyParams, ToyTarget, no_traceback


def ensemble(**params) -> Ensemble:
    p = EnsembleParams(**{"of": ["a", "b"], **params})
    return Ensemble(p, ToyTarget(ToyParams()), AttackContext(name="ensemble", seed_key="ensemble"))


def table(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy component scores of ``n`` images, half members (shifted up)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int64)
    a = rng.normal(size=n) + 1.0 * labels
    b = 3 * rng.normal(size=n) + 2.0 * labels + 10
    return np.stack([a, b], axis=1), labels


def test_logistic_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    x, y = table()
    z = (x - x.mean(0)) / x.std(0)
    w, b, _ = fit_logistic(z, y.astype(float), l2=2.0)
    ref = LogisticRegression(C=1 / 2.0, tol=1e-12, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(w, ref.coef_[0], rtol=1e-5)
    assert b == pytest.approx(ref.intercept_[0], rel=1e-5, abs=1e-8)


def test_mid_ranks_count_ties_half():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(mid_ranks(np.array([0.0, 2.0, 2.5, 9.0]), ref), [0.0, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("combiner", ["logistic", "rank-mean"])
def test_fit_uses_calibration_rows_only(combiner):
    """Scrambling the held-out rows (their scores and labels) changes neither the fitted facts nor
    any calibration row's score, and each held-out row's score depends on that row alone."""
    x, y = table()
    fit = calibration_split(y, 0.2, seed=3)
    att = ensemble(combiner=combiner)
    s1, info1 = att.fit_predict(x, y, fit)
    x2, y2 = x.copy(), y.copy()
    rng = np.random.default_rng(9)
    x2[~fit] = rng.normal(size=x2[~fit].shape) * 50
    y2[~fit] = 1 - y2[~fit]
    s2, info2 = att.fit_predict(x2, y2, fit)
    assert info1 == info2
    np.testing.assert_array_equal(s1[fit], s2[fit])
    # a held-out row scored alone gets the same score as in the full table
    one = fit.copy()
    keep = np.flatnonzero(~fit)[:1]
    sub = np.concatenate([np.flatnonzero(fit), keep])
    s3, _ = att.fit_predict(x2[sub], y2[sub], fit[sub])
    assert s3[-1] == pytest.approx(s2[keep[0]], rel=1e-12)
    assert one.sum() == fit.sum()


@pytest.mark.parametrize("combiner", ["logistic", "rank-mean"])
def test_combination_beats_a_weak_component(combiner):
    from sklearn.metrics import roc_auc_score

    x, y = table(n=2000, seed=1)
    fit = calibration_split(y, 0.2, seed=0)
    s, _ = ensemble(combiner=combiner).fit_predict(x, y, fit)
    held = ~fit
    auc = roc_auc_score(y[held], s[held])
    assert auc > max(roc_auc_score(y[held], x[held, j]) for j in range(2)) - 0.005
    assert auc > 0.75


# ------------------------------------------------------------------------------- end to end
@pytest.fixture
def run_config(toy_plugin, image_folder, write_config):
    members = image_folder("members", n=10, seed=1)
    nonmembers = image_folder("nonmembers", n=10, seed=2)

    def make(attacks, **extra):
        return write_config({
            "run": {"name": "ens", "seed": 3, "device": "cpu", "batch_size": 4},
            "target": {"plugin": "toy", "scale": 0.3, "shift": 0.1},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": attacks,
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
            **extra,
        })

    return make


BASE = [
    {"plugin": "pia", "params": {"t": 100}},
    {"plugin": "naive-loss", "params": {"t": 100}},
]


@pytest.mark.parametrize("combiner", ["logistic", "rank-mean"])
def test_ensemble_run_end_to_end(run_config, audit_cli, tmp_path, combiner):
    cfg = run_config([*BASE, {"plugin": "ensemble", "params": {"of": ["pia", "naive-loss"], "combiner": combiner}}])
    out = tmp_path / "run"
    code, output = audit_cli("run", str(cfg), "--output", str(out))
    assert code == 0, output
    rows = list(csv.DictReader(open(out / "scores.csv")))
    ens = [r for r in rows if r["attack"] == "ensemble"]
    assert len(ens) == 20 and {r["split"] for r in ens} == {"calibration", "evaluation"}
    # the split is the learned scorer's: seeded, stratified, by label in record order
    labels = np.array([1 if r["label"] == "member" else 0 for r in ens])
    want = calibration_split(labels, 0.2, seed=3)
    assert [r["split"] == "calibration" for r in ens] == list(want)
    res = json.loads((out / "results.json").read_text())
    e = res["attacks"]["ensemble"]
    assert e["scorer"]["kind"] == "combination" and e["scorer"]["of"] == ["pia", "naive-loss"]
    assert e["n_members"] + e["n_nonmembers"] == int((~want).sum())
    assert set(e["components_on_evaluation"]) == {"pia", "naive-loss"}
    assert e["spent"] == {"queries": 0, "nfe": 0}
    assert e["nfe_per_image"] == pytest.approx(res["attacks"]["pia"]["nfe_per_image"] + res["attacks"]["naive-loss"]["nfe_per_image"])
    # the components' scores in scores.csv are untouched by the ensemble entry
    code, _ = audit_cli("run", str(run_config(BASE)), "--output", str(tmp_path / "plain"))
    plain = [r for r in csv.DictReader(open(tmp_path / "plain" / "scores.csv"))]
    assert [r["score"] for r in plain] == [r["score"] for r in rows if r["attack"] != "ensemble"]


@pytest.mark.parametrize(
    "of, word",
    [
        (["pia", "nope"], "'nope', which is not an attack entry"),
        (["pia"], "at least two"),
        (["pia", "pia"], "more than once"),
        (["pia", "cls"], "scorer: classifier"),
    ],
)
def test_bad_components_are_refused_before_scoring(run_config, audit_cli, tmp_path, of, word):
    attacks = [*BASE, {"plugin": "pia", "name": "cls", "scorer": "classifier"}, {"plugin": "ensemble", "params": {"of": of}}]
    out = tmp_path / "bad"
    code, output = audit_cli("run", str(run_config(attacks)), "--output", str(out))
    assert code == 2 and word in " ".join(output.split()) and "attacks[3].params" in output and no_traceback(output)
    assert not (out / "scores.csv").exists()


def test_copyright_mode_tests_the_held_out_split(toy_plugin, image_folder, write_config, audit_cli, tmp_path):
    cfg = write_config({
        "run": {"name": "ens-c", "seed": 1, "device": "cpu"},
        "target": {"plugin": "toy", "scale": 0.3, "shift": 0.1},
        "data": {"suspects": str(image_folder("s", n=10, seed=4)), "reference": str(image_folder("r", n=30, seed=5))},
        "attacks": [*BASE, {"plugin": "ensemble", "params": {"of": ["pia", "naive-loss"], "combiner": "rank-mean"}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 0},
    })
    code, output = audit_cli("run", str(cfg), "--output", str(tmp_path / "c"))
    assert code == 0, output
    si = json.loads((tmp_path / "c" / "results.json").read_text())["set_inference"]
    assert si["ensemble"]["n_suspects"] == 8 and si["ensemble"]["n_reference"] == 24
    # the rank combination (default) pools the components, not the ensemble built from them
    assert si["combined"]["method"] == "rank" and si["combined"]["attacks"] == ["pia", "naive-loss"]
