"""A flaky endpoint: 30 % of requests fail with 503 (every 4th failure with Retry-After), a few hang
past the client's timeout, the rest are delayed. A ReDiffuse run through it must still be complete
and give exactly the scores of a run against the same model behind a healthy endpoint."""

from __future__ import annotations

import csv
import json

import pytest

from audit_http import server as serve
from audit_core.testing import ToyParams, ToyTarget
from audit_http.testing import FaultInjector

pytest.importorskip("audit_rediffuse", reason="the fault test runs ReDiffuse (audit-rediffuse)")


@pytest.fixture
def endpoints(served):
    """(healthy url, flaky url, the injector): two servers over the same toy model."""
    healthy, flaky = (serve.Service(ToyTarget(ToyParams()), "toy-model") for _ in range(2))
    injector = FaultInjector(
        serve.create_app(flaky), fail_rate=0.3, max_delay_s=0.05, retry_after_every=4, retry_after="1",
        hang_rate=0.05, hang_s=3.0, seed=7,
    )
    yield served(serve.create_app(healthy)), served(injector), injector
    healthy.close()
    flaky.close()


def test_a_flaky_endpoint_still_gives_a_complete_and_identical_run(endpoints, image_folder, write_config, audit_cli, tmp_path):
    healthy_url, flaky_url, injector = endpoints
    members, nonmembers = image_folder("members", n=12, seed=1), image_folder("nonmembers", n=12, seed=2)

    def run(url: str, name: str):
        cfg = {
            "run": {"name": name, "seed": 5, "device": "cpu", "batch_size": 8},
            "target": {
                "plugin": "http", "url": url, "concurrency": 4, "rows_per_request": 4,
                "timeout_s": 1.0, "max_retries": 10, "backoff_s": 0.02, "max_backoff_s": 0.2,
            },
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 4}}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
        }
        out = tmp_path / name
        code, output = audit_cli("run", write_config(cfg, f"{name}.yaml"), "--output", out)
        assert code == 0, output
        return out

    clean = run(healthy_url, "healthy")
    flaky = run(flaky_url, "flaky")
    assert (flaky / "scores.csv").read_text() == (clean / "scores.csv").read_text()
    rows = list(csv.DictReader((flaky / "scores.csv").open()))
    assert len(rows) == 24 and all(r["score"] not in ("", "nan") for r in rows)

    target = json.loads((flaky / "results.json").read_text())["target"]
    c = injector.counts
    print(f"\nflaky endpoint: {c}; client retries {target['retries']}, waited {target['retry_wait_s']} s, {target['transient_failures']}")
    assert c["failed"] >= 5 and c["retry_after"] >= 1 and c["hung"] >= 1
    assert target["retries"] >= c["failed"] + c["hung"]
    assert target["transient_failures"]["HTTP 503"] == c["failed"]
    assert target["transient_failures"]["timeout"] >= c["hung"]
    assert target["retry_wait_s"] >= c["retry_after"] * 1.0  # Retry-After: 1 honoured
    assert target["seeds"].startswith("honoured")
    assert json.loads((clean / "results.json").read_text())["target"]["retries"] == 0
