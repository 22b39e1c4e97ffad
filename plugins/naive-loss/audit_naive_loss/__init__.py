"""audit-naive-loss: the naive loss grey-box membership-inference attack (Matsumoto et al., 2023).

See :mod:`audit_naive_loss.attack` for the attack and :mod:`audit_naive_loss.plugin` for the hook.
"""

from .attack import NaiveLoss, NaiveLossParams

__all__ = ["NaiveLoss", "NaiveLossParams"]
__version__ = "0.1.0"
