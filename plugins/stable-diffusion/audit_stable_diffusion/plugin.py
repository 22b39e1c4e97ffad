"""Registers the ``stable-diffusion`` target and the ``diffusers`` text-to-image generator."""

from audit_core import hookimpl

from .generator import DiffusersGenerator
from .target import StableDiffusionTarget


@hookimpl
def register_targets(register):
    register(StableDiffusionTarget)


@hookimpl
def register_generators(register):
    register(DiffusersGenerator)
