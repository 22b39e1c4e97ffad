"""The hook implementation of audit-gsa: what the entry point ``audit = gsa`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: gsa, params: {variant: gsa1}}]`` in audit.yaml."""
    register("gsa", "audit_gsa.attack:GSA")  # imported on first use
