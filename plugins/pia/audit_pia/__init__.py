"""audit-pia: the PIA and PIAN grey-box membership-inference attacks (Kong et al., ICLR 2024).

See :mod:`audit_pia.attack` for the attack and :mod:`audit_pia.plugin` for the hook.
"""

from .attack import PIA, PIAParams

__all__ = ["PIA", "PIAParams"]
__version__ = "0.1.0"
