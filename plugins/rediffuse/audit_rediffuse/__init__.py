"""audit-rediffuse: ReDiffuse, the black-box membership-inference attack for diffusion models
(Li et al., ICML 2025), pixel and latent variants, as an ``audit`` plugin.

Read it as a worked example of an attack plugin:

- ``attack.py``  the ``ReDiffuse`` attack: params, target-dependent defaults, validation, scoring;
- ``plugin.py``  the hook implementation the entry point ``audit = rediffuse`` points at.
"""

from audit_core import lazy_exports

__all__ = ["ReDiffuse", "ReDiffuseParams", "PIXEL_DEFAULTS", "LATENT_DEFAULTS"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
