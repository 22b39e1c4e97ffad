"""The terminal summary names the right negative class for the unsupported-FPR footnote."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from audit_core.run.console import summary


def _results(mode: str) -> dict:
    metric = {"value": 0.5, "ci95": [0.4, 0.6]}
    low = {**metric, "supported": False, "note": "unsupported"}
    return {
        "run": {"name": "r", "mode": mode, "notes": []},
        "attacks": {"a": {"metrics": {"auc": metric, "asr": metric, "tpr_at_1pct_fpr": low, "tpr_at_0_1pct_fpr": low},
                          "nfe_per_image": 1, "queries_per_image": 0, "seconds": 0.1}},
    }


@pytest.mark.parametrize(("mode", "want", "not_want"), [("evaluation", "fewer non-members", "reference"),
                                                         ("copyright", "fewer reference images", "non-members")])
def test_unsupported_footnote_names_the_negative_class(mode, want, not_want):
    buf = io.StringIO()
    summary(_results(mode), Console(file=buf, width=200))
    foot = next(line for line in buf.getvalue().splitlines() if line.startswith("* unsupported"))
    assert want in foot and not_want not in foot
