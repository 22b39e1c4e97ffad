"""The hook implementation behind the entry point ``audit = evidence-report``: the one-page
evidence summary (evidence.html and evidence.md) of an attested run."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_reporters(register):
    """``reports: [{plugin: evidence-report}]`` in audit.yaml: evidence.html and evidence.md."""
    register("evidence-report", "audit_html_report.evidence:EvidenceReport")  # imported on first use
