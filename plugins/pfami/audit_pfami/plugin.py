"""The hook implementation of audit-pfami: what the entry point ``audit = pfami`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: pfami, params: {perturbations: 10}}]`` in audit.yaml."""
    register("pfami", "audit_pfami.attack:PFAMI")  # imported on first use
