"""The hook implementations of audit-http (entry point ``audit = http``)."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    """``target: {plugin: http, url: ..., token_env: ...}`` in audit.yaml."""
    from .target import HTTPTarget

    register(HTTPTarget)
