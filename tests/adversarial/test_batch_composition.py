"""Scores across batch compositions (issue 34, smaller): docs/reliability.md promised bit-identical
scores when ``run.batch_size`` changes on ``--resume``, but the real U-Net's float kernels depend on
the batch's size (CPU and GPU libraries pick their blocking and reduction order by shape), so
the last bits may move. The promise is now what holds, stated in the docs and checked here on
the demo's real model and its four attacks: the same batch size gives byte-identical scores;
another batch size, or a resume with another batch size, equal scores to a relative 1e-4."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from audit_core.testing import assert_batch_size_independent

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-4  # the documented tolerance (docs/reliability.md, "Batch size"); measured up to 2.5e-5 (secmia)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def demo_config(write_config) -> Path:
    return write_config({
        "run": {"name": "bs", "seed": 0, "device": "cpu"},
        "target": {"plugin": "ddim", "model": "builtin:digits-ddpm"},
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": 3},
        "attacks": [
            {"plugin": "rediffuse", "params": {"t": 200, "k": 100, "n": 2, "distance": "l2"}},
            {"plugin": "secmia", "params": {"t_sec": 100, "k": 50}},
            {"plugin": "pia", "params": {"t": 200, "p": 4}},
            {"plugin": "naive-loss", "params": {"t": 200}},
        ],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
        "reports": [],
    })


def scores(run: Path) -> dict:
    return {(r["attack"], r["image_id"]): float(r["score"]) for r in csv.DictReader((run / "scores.csv").open())}


def test_demo_scores_across_batch_sizes_and_a_resume_with_another(write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_ddim")
    cfg = demo_config(write_config)
    assert_batch_size_independent(audit_cli, cfg, tmp_path / "bs", sizes=(6, 4), rtol=RTOL)
    whole = scores(tmp_path / "bs" / "bs6-0")
    # a resume at another batch size: half the rows dropped, scored again in batches of 1
    run = tmp_path / "resumed"
    assert audit_cli("run", cfg, "--output", run, "--set", "run.batch_size=6")[0] == 0
    db = sqlite3.connect(run / "state.sqlite")
    db.execute("DELETE FROM scores WHERE image_id LIKE 'nonmembers/%'")
    db.execute("DELETE FROM meta WHERE key='finished'")
    db.commit()
    db.close()
    code, out = audit_cli("run", cfg, "--output", run, "--resume", "--set", "run.batch_size=1")
    assert code == 0, out
    resumed = scores(run)
    assert resumed.keys() == whole.keys()
    keys = sorted(whole)
    np.testing.assert_allclose([resumed[k] for k in keys], [whole[k] for k in keys], rtol=RTOL)
    # the rows that were kept are the stored ones, bit for bit
    assert all(resumed[k] == whole[k] for k in keys if k[1].startswith("members/"))
