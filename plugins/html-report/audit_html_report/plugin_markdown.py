"""The hook implementation behind the entry point ``audit = markdown-report``: its own entry point
so that ``audit plugins`` lists the Markdown summary next to the HTML report."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_reporters(register):
    """``reports: [{plugin: markdown-report}]`` in audit.yaml: summary.md."""
    register("markdown-report", "audit_html_report.markdown:MarkdownReport")  # imported on first use
