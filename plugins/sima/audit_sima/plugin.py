"""The hook implementation of audit-sima: what the entry point ``audit = sima`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: sima, params: {t: 100, p: 4}}]`` in audit.yaml."""
    register("sima", "audit_sima.attack:SimA")  # imported on first use
