"""audit-rediffuse: ReDiffuse, the black-box membership-inference attack for diffusion models
(Li et al., ICML 2025), pixel and latent variants, as an ``audit`` plugin.

Read it as a worked example of an attack plugin:

- ``attack.py``  the ``ReDiffuse`` attack: params, target-dependent defaults, validation, scoring;
- ``plugin.py``  the hook implementation the entry point ``audit = rediffuse`` points at.
"""

__all__ = ["ReDiffuse", "ReDiffuseParams", "PIXEL_DEFAULTS", "LATENT_DEFAULTS"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The names above load with their module on first use: entry-point discovery (which imports
    this package) stays torch-free, so ``audit --help`` starts fast."""
    if name in __all__:
        from . import attack

        return getattr(attack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
