"""Tests of the ensemble plugin: the combiners and the log transform against independent
computations, fitting on the calibration rows only (changing or permuting held-out rows changes
nothing fitted), ``combiner: auto``'s cross-validated choice, and a toy run end to end (scores.csv
rows, split column, components compared on the same held-out images, config errors)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from audit_ensemble import Ensemble, EnsembleParams
from audit_ensemble.attack import LOG_FLOOR, cv_folds, fit_logistic, mid_ranks, transform

from audit_core.plugin.attacks import AttackContext
from audit_core.stats.scorer import calibration_split
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


COMBINERS = ["logistic", "rank-mean", "auto"]


def distances(n: int = 400, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Negated log-normal distances, as the attacks' scores are: column a smaller for members,
    column b as informative as ``a`` (``noise`` 1) or (``noise`` 3) wide, member-independent noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int64)
    a = -np.exp(rng.normal(size=n) - 1.0 * labels)
    b = -np.exp(noise * rng.normal(size=n) - (1.0 if noise == 1.0 else 0.0) * labels)
    return np.stack([a, b], axis=1), labels


@pytest.mark.parametrize("combiner", COMBINERS)
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


@pytest.mark.parametrize("transform_", ["auto", "none"])
@pytest.mark.parametrize("combiner", COMBINERS)
def test_permuting_held_out_labels_changes_no_score(combiner, transform_):
    """No leakage: the held-out labels are shuffled, every score and every fitted fact stays."""
    x, y = distances(seed=4)
    fit = calibration_split(y, 0.2, seed=1)
    att = ensemble(combiner=combiner, transform=transform_)
    s1, info1 = att.fit_predict(x, y, fit)
    y2 = y.copy()
    y2[~fit] = np.random.default_rng(2).permutation(y[~fit])
    assert (y2 != y).any()
    s2, info2 = att.fit_predict(x, y2, fit)
    np.testing.assert_array_equal(s1, s2)
    assert info1 == info2


@pytest.mark.parametrize("combiner", COMBINERS)
def test_deterministic(combiner):
    """The same table gives the same scores and facts, bit for bit (no draw anywhere)."""
    x, y = distances(seed=5)
    fit = calibration_split(y, 0.2, seed=2)
    s1, info1 = ensemble(combiner=combiner).fit_predict(x, y, fit)
    s2, info2 = ensemble(combiner=combiner).fit_predict(x.copy(), y.copy(), fit.copy())
    np.testing.assert_array_equal(s1, s2)
    assert info1 == info2


def test_transform_logs_one_signed_components_only():
    fit = np.array([True, True, True, False, False])
    x = np.array([
        [-1.0, 2.0, -1.0],
        [-4.0, 8.0, 3.0],
        [-2.0, 4.0, 0.5],
        [-1e-9, -1.0, 7.0],  # held out: a magnitude under the floor, and the other sign
        [-100.0, 1.0, -9.0],
    ])
    out, kinds = transform(x, fit, "auto")
    assert kinds == ["-log(-s)", "log(s)", "identity"]
    np.testing.assert_allclose(out[[0, 1, 2, 4], 0], -np.log([1.0, 4.0, 2.0, 100.0]))
    np.testing.assert_allclose(out[[0, 1, 2, 4], 1], np.log([2.0, 8.0, 4.0, 1.0]))
    assert out[3, 0] == pytest.approx(-np.log(LOG_FLOOR * 2.0))  # median calibration magnitude 2
    assert out[3, 1] == pytest.approx(np.log(LOG_FLOOR * 4.0))
    np.testing.assert_array_equal(out[:, 2], x[:, 2])
    same, kinds = transform(x, fit, "none")
    np.testing.assert_array_equal(same, x)
    assert kinds == ["identity"] * 3


def test_logistic_on_the_log_scale_is_logistic_of_the_logs():
    """transform: auto on negated distances equals transform: none on -log(distance)."""
    x, y = distances(seed=6)
    fit = calibration_split(y, 0.2, seed=0)
    s1, info1 = ensemble(transform="auto").fit_predict(x, y, fit)
    s2, info2 = ensemble(transform="none").fit_predict(-np.log(-x), y, fit)
    np.testing.assert_allclose(s1, s2, rtol=1e-12, atol=1e-12)
    assert info1["weights"] == info2["weights"] and info1["transform"] == {"a": "-log(-s)", "b": "-log(-s)"}


def test_log_scale_helps_heavy_tailed_scores():
    """Why transform: auto is the default: on log-normal distances the raw-scale fit is dominated
    by a few extreme images, the log-scale fit is not (held-out AUC, seeded data)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 2000
    y = (np.arange(n) % 2).astype(np.int64)
    x = np.stack([-np.exp(2 * rng.normal(size=n) - y), -np.exp(2 * rng.normal(size=n) - y)], axis=1)
    fit = calibration_split(y, 0.2, seed=0)
    held = ~fit
    auc = {t: roc_auc_score(y[held], ensemble(transform=t).fit_predict(x, y, fit)[0][held]) for t in ("auto", "none")}
    best = max(roc_auc_score(y[held], x[held, j]) for j in range(2))
    assert auc["auto"] > best + 0.01 and auc["auto"] > auc["none"] + 0.01, auc


def test_cv_folds_hold_both_classes_and_calibration_rows_only():
    y = np.array([0, 1] * 10 + [1] * 5)
    fit = np.zeros(len(y), bool)
    fit[[0, 2, 4, 1, 3, 5, 7, 9, 21, 22]] = True  # 3 non-members, 7 members
    f = cv_folds(y, fit, 5)
    assert (f[~fit] == -1).all() and f.max() == 2  # as many folds as the smaller class
    for k in range(3):
        assert set(y[f == k]) == {0, 1}
    one = fit & ~((y == 0) & (np.arange(len(y)) > 0))  # a single calibration non-member
    assert (cv_folds(y, one, 5)[one] == 0).all()  # one fold: auto falls back to logistic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_drops_a_pure_noise_component(seed):
    """A component unrelated to membership: cross-validation prefers the informative one alone,
    and the score is that component's own (refitted on nothing)."""
    x, y = distances(seed=seed, noise=3.0)
    fit = calibration_split(y, 0.2, seed=seed)
    s, info = ensemble(combiner="auto").fit_predict(x, y, fit)
    assert info["chosen"] == "a alone" and info["component"] == "a"
    assert info["cv_auc"]["a alone"] == max(info["cv_auc"].values())
    np.testing.assert_array_equal(s, x[:, 0])


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_combines_two_informative_components(seed):
    """Two independent, equally informative components: a combination wins the cross-validation,
    and auto's scores are that combiner's own fit on all calibration rows."""
    x, y = distances(n=1000, seed=seed)
    fit = calibration_split(y, 0.2, seed=seed)
    s, info = ensemble(combiner="auto").fit_predict(x, y, fit)
    assert info["chosen"] in ("logistic", "rank-mean"), info
    assert info["cv_auc"][info["chosen"]] == max(info["cv_auc"].values()) and info["cv_folds"] == 5
    direct, _ = ensemble(combiner=info["chosen"]).fit_predict(x, y, fit)
    np.testing.assert_array_equal(s, direct)


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


@pytest.mark.parametrize("combiner", COMBINERS)
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


def test_auto_without_two_folds_falls_back_to_logistic():
    x, y = distances(n=40, seed=3)
    fit = np.zeros(len(y), bool)
    fit[[0, 1, 3, 5]] = True  # one non-member, three members
    s, info = ensemble(combiner="auto").fit_predict(x, y, fit)
    assert info["chosen"] == "logistic" and info["cv_folds"] == 0
    np.testing.assert_array_equal(s, ensemble(combiner="logistic").fit_predict(x, y, fit)[0])
