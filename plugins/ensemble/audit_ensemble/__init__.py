"""audit-ensemble: one attack entry that combines other entries' scores.

See :mod:`audit_ensemble.attack` for the combiners and :mod:`audit_ensemble.plugin` for the hook.
"""

from .attack import Ensemble, EnsembleParams

__all__ = ["Ensemble", "EnsembleParams"]
__version__ = "0.1.0"
