"""The hook implementation of audit-clid: what the entry point ``audit = clid`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: clid}]`` in audit.yaml (on a text-conditional target: stable-diffusion)."""
    register("clid", "audit_clid.attack:CLiD")  # imported on first use
