"""audit-clid: CLiD, the conditional likelihood discrepancy membership-inference attack on
text-to-image diffusion models (Zhai et al., NeurIPS 2024), grey-box and text-conditional.

See :mod:`audit_clid.attack` for the attack, :mod:`audit_clid.captions` for the caption
perturbations and :mod:`audit_clid.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["CLiD", "CLiDParams"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
