"""Registers the ``stable-diffusion`` target."""

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    # imported here, not above: `audit --help` and `audit plugins` must not load torch
    from .target import StableDiffusionTarget

    register(StableDiffusionTarget)
