"""The hook implementation of audit-ensemble: what the entry point ``audit = ensemble`` points at."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    """``attacks: [..., {plugin: ensemble, params: {of: [rediffuse, pia], combiner: logistic}}]``."""
    register("ensemble", "audit_ensemble.attack:Ensemble")  # imported on first use
