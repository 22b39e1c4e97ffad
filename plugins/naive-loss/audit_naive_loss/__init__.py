"""audit-naive-loss: the naive loss grey-box membership-inference attack (Matsumoto et al., 2023).

See :mod:`audit_naive_loss.attack` for the attack and :mod:`audit_naive_loss.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["NaiveLoss", "NaiveLossParams"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
