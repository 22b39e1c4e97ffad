"""Failing late (issue 18): inputs that passed validation, spent every query, then crashed with
a traceback. Each is now refused before the first query (exit 2, one paragraph naming the key
and the numbers), or warned about up front."""

from __future__ import annotations

import shutil

import pytest

from audit_core.run import preflight
from audit_core.testing import write_images


@pytest.mark.parametrize("how", ["yaml", "set"])
def test_negative_seed(how, toy, refuse):
    if how == "yaml":
        msg = refuse(toy(run={"seed": -1}))
    else:
        msg = refuse(toy(), "--set", "run.seed=-1")
    assert "run.seed" in msg and "greater than or equal to 0" in msg


def test_huge_n_is_refused_with_the_memory_estimate(toy, refuse, monkeypatch):
    served = []
    from audit_core.testing import ToyTarget

    monkeypatch.setattr(ToyTarget, "eps", lambda self, *a, **k: served.append(1))
    cfg = toy(run={"batch_size": 64}, target={"plugin": "toy", "image_size": 28})
    msg = refuse(cfg, "--set", "attacks.0.params.n=1000000")
    # 64 images x 1e6 variations x 1x28x28 float32 x 6 copies = 1204.2 GB, on any machine
    assert "one batch needs at least 1204.2 GB of memory" in msg and "run.batch_size" in msg and "n" in msg
    assert not served  # refused before the first model call


def test_memory_estimate_formula():
    assert preflight.estimate(batch_size=2, rows=10, channels=3, image_size=32) == 2 * 10 * 3 * 32 * 32 * 4 * 6


def test_classifier_with_one_image_each_is_refused_with_the_minimum(toy, refuse, tmp_path):
    for folder in (toy.members, toy.nonmembers):
        shutil.rmtree(folder)
    write_images(toy.members, 1, seed=1)
    write_images(toy.nonmembers, 1, seed=2)
    attack = {"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 2}, "scorer": "classifier"}
    msg = refuse(toy(attacks=[attack]))
    assert "scorer: classifier" in msg and "at least 2 members and 2 non-members" in msg and "has 1 and 1" in msg


def test_classifier_at_the_minimum_trains_and_evaluates(one_torch_thread):
    import numpy as np

    from audit_core.stats import metrics
    from audit_core.stats.scorer import train_classifier

    labels = np.array([1, 1, 0, 0])
    maps = np.random.default_rng(0).random((4, 1, 4, 4)).astype(np.float32)
    sr = train_classifier(maps, labels, fraction=0.2, seed=0, epochs=2)
    held = ~sr.calibration
    assert sorted(labels[held]) == [0, 1]
    assert 0 <= metrics.compute(sr.scores[held], labels[held], 10, 0)["auc"]["value"] <= 1


@pytest.mark.parametrize("fraction, minimum", [(0.2, 2), (0.5, 2), (0.8, 3), (0.9, 5)])
def test_classifier_minimum_leaves_one_image_for_evaluation(fraction, minimum):
    from audit_core.stats.scorer import calibration_split
    import numpy as np

    assert preflight.classifier_minimum(fraction) == minimum
    for n, ok in ((minimum, True), (minimum - 1, False)):
        mask = calibration_split(np.array([1] * n + [0] * n), fraction, seed=0)
        assert ((~mask).sum() >= 2) == ok  # at least one member and one non-member left to evaluate


def test_identical_members_and_nonmembers_warn(toy, audit_cli, tmp_path):
    shutil.rmtree(toy.nonmembers)
    shutil.copytree(toy.members, toy.nonmembers)
    code, output = audit_cli("run", toy(), "--output", tmp_path / "run")
    text = " ".join(output.split())
    assert code == 0 and "warning:" in text and "6 non-member image(s) have exactly the same content as a member" in text
    import json

    notes = json.loads((tmp_path / "run" / "results.json").read_text())["run"]["notes"]
    assert any("same content" in n for n in notes)


def test_no_warning_for_distinct_sets(toy, audit_cli, tmp_path):
    code, output = audit_cli("run", toy(), "--output", tmp_path / "run")
    assert code == 0 and "same content" not in output
