"""Registers the ``stable-diffusion`` target and the ``diffusers`` text-to-image generator."""

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    # references, imported on first use: `audit --help` and `audit plugins` must not load torch
    register("stable-diffusion", "audit_stable_diffusion.target:StableDiffusionTarget")


@hookimpl
def register_generators(register):
    register("diffusers", "audit_stable_diffusion.generator:DiffusersGenerator")
