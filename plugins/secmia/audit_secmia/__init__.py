"""audit-secmia: the SecMI grey-box membership-inference attack (Duan et al., ICML 2023).

See :mod:`audit_secmia.attack` for the attack and :mod:`audit_secmia.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["SecMIA", "SecMIParams"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
