"""The hook implementation of audit-html-report: what the entry point ``audit = html-report`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_reporters(register):
    """``reports: [{plugin: html-report}]`` in audit.yaml."""
    register("html-report", "audit_html_report.html:HtmlReport")  # imported on first use
