"""Registers the ``dit`` target."""

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    # a reference, imported when a config selects `dit`: `audit plugins` stays torch-free
    register("dit", "audit_dit.target:DiTTarget")
