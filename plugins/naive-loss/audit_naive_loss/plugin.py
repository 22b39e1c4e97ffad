"""The hook implementation of audit-naive-loss: what the entry point ``audit = naive-loss`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [{plugin: naive-loss, params: {t: 200, draws: 1}}]`` in audit.yaml."""
    register("naive-loss", "audit_naive_loss.attack:NaiveLoss")  # imported on first use
