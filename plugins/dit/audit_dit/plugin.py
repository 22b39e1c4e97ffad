"""Registers the ``dit`` target."""

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    # Imported here, not at module level: entry-point discovery stays torch-free (`audit --help`).
    from .target import DiTTarget

    register(DiTTarget)
