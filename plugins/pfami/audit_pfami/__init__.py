"""audit-pfami: the PFAMI grey-box membership-inference attack (Fu et al., ICLR 2024), metric variant.

See :mod:`audit_pfami.attack` for the attack and :mod:`audit_pfami.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["PFAMI", "PFAMIParams"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
