"""Registers the ``dit`` target."""

from audit_core import hookimpl

from .target import DiTTarget


@hookimpl
def register_targets(register):
    register(DiTTarget)
