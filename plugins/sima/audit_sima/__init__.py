"""audit-sima: the SimA grey-box membership-inference attack (Rao, Qu, Moyer, arXiv 2509.25003).

See :mod:`audit_sima.attack` for the attack and :mod:`audit_sima.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["SimA", "SimAParams"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
