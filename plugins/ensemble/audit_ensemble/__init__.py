"""audit-ensemble: one attack entry that combines other entries' scores.

See :mod:`audit_ensemble.attack` for the combiners and :mod:`audit_ensemble.plugin` for the hook.
"""

from audit_core import lazy_exports

__all__ = ["Ensemble", "EnsembleParams"]
__version__ = "0.1.0"


# the names above load with .attack on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "attack")
