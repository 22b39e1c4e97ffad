"""Registers the ``stable-diffusion`` target."""

from audit_core import hookimpl

from .target import StableDiffusionTarget


@hookimpl
def register_targets(register):
    register(StableDiffusionTarget)
