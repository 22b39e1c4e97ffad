"""audit-gsa: the gradient subspace attack GSA (Pang et al., "White-box Membership Inference
Attacks against Diffusion Models", PoPETs 2025), white-box.

See :mod:`audit_gsa.attack` for the attack, :mod:`audit_gsa.classifier` for the classifier fitted
on the calibration split and :mod:`audit_gsa.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["GSA", "GSAParams", "LogisticModel"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
