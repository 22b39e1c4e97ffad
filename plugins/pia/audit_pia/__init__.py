"""audit-pia: the PIA and PIAN grey-box membership-inference attacks (Kong et al., ICLR 2024).

See :mod:`audit_pia.attack` for the attack and :mod:`audit_pia.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["PIA", "PIAParams"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
