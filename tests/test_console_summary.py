"""The terminal summary names the right negative class for the unsupported-FPR footnote."""

from __future__ import annotations

import io

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


def test_unsupported_footnote_names_the_negative_class():
    buf = io.StringIO()
    summary(_results("evaluation"), Console(file=buf, width=200))
    foot = next(line for line in buf.getvalue().splitlines() if line.startswith("* unsupported"))
    assert "fewer non-members" in foot and "reference" not in foot


def test_copyright_mode_prints_no_metrics_table_and_says_why():
    """Issue 30: AUC / ASR of suspects vs reference count every suspect as a member."""
    buf = io.StringIO()
    summary(_results("copyright"), Console(file=buf, width=200))
    text = buf.getvalue()
    assert "* unsupported" not in text and "TPR@1%" not in text and "(copyright mode)" not in text
    assert "Evaluation metrics (AUC, ASR, TPR@FPR of suspects vs reference) are not shown" in " ".join(text.split())
    assert text.splitlines()[-1].startswith("Conclusion: not tested")
