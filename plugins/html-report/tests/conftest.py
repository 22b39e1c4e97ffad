"""Finished toy runs to render, made once per test session (the toy target + the example attack
``variation-similarity``, in-process through the ``audit`` CLI). Tests copy a run before changing it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml

from audit_core.testing import ToyPlugin, invoke, registered, write_images

EVIL = '<script>alert("caption")</script>'
ATTACK = {"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 2}}


def _manifest(folder: Path, n: int, seed: int, prefix: str, captions: dict[int, str]) -> Path:
    write_images(folder, n, seed=seed, prefix=prefix)
    path = folder / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "caption"])
        for i in range(n):
            w.writerow([f"{prefix}{i:04d}.png", captions.get(i, f"{prefix} number {i}")])
    return path


def _run(base: Path, name: str, data: dict, attacks: list[dict], reports: list[dict], extra: dict | None = None) -> Path:
    cfg = {
        "run": {"name": name, "seed": 0, "device": "cpu", "batch_size": 16},
        "target": {"plugin": "toy"},
        "data": data,
        "attacks": attacks,
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 50},
        "reports": reports,
        **(extra or {}),
    }
    base.mkdir(parents=True, exist_ok=True)
    config = base / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    out = base / f"run-{name}"
    with registered(ToyPlugin(), name="toy-targets-html-report"):
        code, output = invoke(["run", config, "--output", out])
    assert code == 0, output
    return out


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("html-report-data")
    # every image a member might be shown in the gallery: give all of them the hostile caption's
    # siblings, and the hostile one to several so it surely lands among the most/least member-like
    members = _manifest(base / "members", 10, 1, "m", {i: f"{EVIL} #{i}" for i in range(10)})
    nonmembers = _manifest(base / "nonmembers", 10, 2, "n", {})
    return {"base": base, "members": members, "nonmembers": nonmembers}


@pytest.fixture(scope="session")
def run_one(toy_data) -> Path:
    """One attack, captions with <script>, both reporters."""
    data = {"members": str(toy_data["members"]), "nonmembers": str(toy_data["nonmembers"])}
    return _run(toy_data["base"], "one", data, [ATTACK], [{"plugin": "html-report"}, {"plugin": "markdown-report"}])


@pytest.fixture(scope="session")
def run_four(toy_data) -> Path:
    """The example attack four times under different names (one hostile)."""
    data = {"members": str(toy_data["members"]), "nonmembers": str(toy_data["nonmembers"])}
    names = ["vs-a", "vs-b", "vs-c", "vs<script>d"]
    attacks = [{**ATTACK, "name": n, "params": {**ATTACK["params"], "n": 1 + i}} for i, n in enumerate(names)]
    return _run(toy_data["base"], "four", data, attacks, [{"plugin": "html-report"}])


@pytest.fixture(scope="session")
def run_copyright(toy_data) -> Path:
    data = {"suspects": str(toy_data["members"]), "reference": str(toy_data["nonmembers"])}
    attacks = [{**ATTACK, "name": "vs-a"}, {**ATTACK, "name": "vs-b", "params": {**ATTACK["params"], "n": 1}}]
    return _run(toy_data["base"], "copyright", data, attacks, [{"plugin": "html-report"}, {"plugin": "markdown-report"}])


@pytest.fixture(scope="session")
def run_sweep(toy_data) -> Path:
    data = {"members": str(toy_data["members"]), "nonmembers": str(toy_data["nonmembers"])}
    attacks = [{"plugin": "variation-similarity", "name": "vs", "params": {"t": [50, 100], "k": 50, "n": [1, 2]}}]
    return _run(toy_data["base"], "sweep", data, attacks, [{"plugin": "html-report"}, {"plugin": "markdown-report"}])


@pytest.fixture
def copy_run(tmp_path):
    def _copy(run: Path) -> Path:
        dest = tmp_path / run.name
        shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock", "state.sqlite*"))
        return dest

    return _copy
