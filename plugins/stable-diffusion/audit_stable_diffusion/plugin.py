"""Registers the ``stable-diffusion`` target and the ``diffusers`` text-to-image generator."""

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    # imported here, not above: `audit --help` and `audit plugins` must not load torch
    from .target import StableDiffusionTarget

    register(StableDiffusionTarget)


@hookimpl
def register_generators(register):
    from .generator import DiffusersGenerator

    register(DiffusersGenerator)
