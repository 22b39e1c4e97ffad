"""The hook implementation of audit-secmia: what the entry point ``audit = secmia`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: secmia, params: {t_sec: 100, k: 10}}]`` in audit.yaml."""
    register("secmia", "audit_secmia.attack:SecMIA")  # imported on first use
