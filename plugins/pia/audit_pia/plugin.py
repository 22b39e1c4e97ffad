"""The hook implementation of audit-pia: what the entry point ``audit = pia`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: pia, params: {variant: pia, t: 200, p: 4}}]`` in audit.yaml."""
    # a reference: audit_pia.attack (and torch) is imported when a config selects `pia`
    register("pia", "audit_pia.attack:PIA")
