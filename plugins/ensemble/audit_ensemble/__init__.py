"""audit-ensemble: one attack entry that combines other entries' scores.

See :mod:`audit_ensemble.attack` for the combiners and :mod:`audit_ensemble.plugin` for the hook.
"""

__all__ = ["Ensemble", "EnsembleParams"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The names above load with their module on first use: entry-point discovery (which imports
    this package) stays torch-free, so ``audit --help`` starts fast."""
    if name in __all__:
        from . import attack

        return getattr(attack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
