"""audit-html-report: turn a finished run directory into ``report.html`` (one offline file) and,
optionally, ``summary.md`` (a Markdown summary for CI logs)."""

__version__ = "0.1.0"
