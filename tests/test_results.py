"""results.json: the checked-in JSON Schema matches the models, and real runs (evaluation, sweep,
copyright) write results that validate against it and round-trip through the models unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from audit_core.copyright import inference
from audit_core.stats import results

VS = {"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 1}}


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(results.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _check(run_dir: Path) -> dict:
    data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    # the models read back exactly what was written (same keys, values and order)
    assert json.dumps(results.to_dict(results.Results.model_validate(data))) == json.dumps(data)
    return data


def test_checked_in_schema_matches_the_models():
    assert results.SCHEMA_PATH.read_text(encoding="utf-8") == results.schema_text(), (
        "docs/results.schema.json is out of date: run `python -m audit_core.stats.results --write`"
    )


def test_schema_rejects_a_broken_results_file():
    v = _validator()
    assert not v.is_valid({"run": {}, "environment": {}, "target": {}, "attacks": {}})
    assert not v.is_valid({"environment": {}, "target": {}, "attacks": {}})


def test_evaluation_run_validates(toy_run_config, audit_cli, tmp_path):
    code, out = audit_cli("run", toy_run_config([VS]), "--output", tmp_path / "run")
    assert code == 0, out
    data = _check(tmp_path / "run")
    entry = data["attacks"]["variation-similarity"]
    assert data["run"]["n_members"] == 4 and entry["n_members"] + entry["n_nonmembers"] == 8
    assert "calibrated" in entry and "sweeps" not in data and "set_inference" not in data


def test_sweep_run_validates(toy_run_config, audit_cli, tmp_path):
    sweep = {"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": [1, 2]}}
    code, out = audit_cli("run", toy_run_config([sweep]), "--output", tmp_path / "run")
    assert code == 0, out
    data = _check(tmp_path / "run")
    assert [p["attack"] for p in data["sweeps"]["variation-similarity"]["points"]] == [
        "variation-similarity[n=1]", "variation-similarity[n=2]"
    ]
    assert data["attacks"]["variation-similarity[n=2]"]["sweep"] == {"base": "variation-similarity", "values": {"n": 2}}


def test_copyright_run_validates(toy_plugin, image_folder, write_config, audit_cli, tmp_path):
    cfg = write_config({
        "run": {"name": "cr", "seed": 3, "device": "cpu", "batch_size": 3},
        "target": {"plugin": "toy"},
        "data": {"suspects": str(image_folder("s", n=4, seed=1)), "reference": str(image_folder("r", n=5, seed=2))},
        "attacks": [VS],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 20},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    data = _check(tmp_path / "run")
    assert data["run"]["n_suspects"] == 4 and data["run"]["n_reference"] == 5 and "n_members" not in data["run"]
    assert set(data["set_inference"]) == {"variation-similarity", "combined", "preflight", "blind", "power"}
    header = (tmp_path / "run" / "scores.csv").read_text().splitlines()[0]
    assert header == "attack,image_id,path,label,score,flagged,p_value"


def test_set_inference_reads_rows_by_field_not_position():
    """Plain rows in, the block out and each row's flagged / p_value filled; calibration rows
    (a learned scorer's training split) are left out and keep empty values."""
    rows = [results.ScoreRow("a", f"s{i}", "", "suspect", 10.0 + i) for i in range(5)]
    rows += [results.ScoreRow("a", f"r{i}", "", "reference", float(i)) for i in range(9)]
    rows.append(results.ScoreRow("a", "c0", "", "suspect", 99.0, split="calibration"))
    block = inference.set_inference(rows, alpha=0.1, method="bonferroni", seed=0)
    assert block["a"]["n_suspects"] == 5 and block["a"]["n_reference"] == 9 and block["a"]["p_value"] < 0.01
    assert all(r.flagged == "true" for r in rows[:5]) and rows[-1].flagged == rows[-1].p_value == ""
    assert float(rows[0].p_value) == pytest.approx(1 / 10)
    csv_text = results.scores_csv(rows, split_col=True, copyright_cols=True)
    assert csv_text.splitlines()[0] == "attack,image_id,path,label,score,split,flagged,p_value"
    assert csv_text.splitlines()[-1] == "a,c0,,suspect,99.0,calibration,,"


def test_run_info_counts_follow_the_mode():
    common = dict(name="x", seed=0, started=None, finished="t", fingerprint="f", labels=np.array([1, 1, 0]),
                  skipped=[], notes=[], executor={"plugin": "inprocess"})
    ev = results.run_info(mode="evaluation", **common).model_dump(exclude_unset=True)
    cr = results.run_info(mode="copyright", **common).model_dump(exclude_unset=True)
    assert (ev["n_members"], ev["n_nonmembers"]) == (2, 1) and "n_suspects" not in ev
    assert (cr["n_suspects"], cr["n_reference"]) == (2, 1) and list(cr)[-2:] == ["n_suspects", "n_reference"]
