"""audit-secmia: the SecMI grey-box membership-inference attack (Duan et al., ICML 2023).

See :mod:`audit_secmia.attack` for the attack and :mod:`audit_secmia.plugin` for the hook.
"""

from .attack import SecMIA, SecMIParams

__all__ = ["SecMIA", "SecMIParams"]
__version__ = "0.1.0"
