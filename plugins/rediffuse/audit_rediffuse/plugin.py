"""The hook implementation of audit-rediffuse: what the entry point ``audit = rediffuse`` points at.

Keep this module import-light: it registers the attack by reference, so the attack module (and
torch) is imported only when a config selects ``rediffuse``."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: rediffuse, params: {t: 200, k: 100, n: 10, distance: l2}}]`` in audit.yaml."""
    register("rediffuse", "audit_rediffuse.attack:ReDiffuse")
