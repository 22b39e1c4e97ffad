"""audit-pia: the PIA and PIAN grey-box membership-inference attacks (Kong et al., ICLR 2024).

See :mod:`audit_pia.attack` for the attack and :mod:`audit_pia.plugin` for the hook.
"""

__all__ = ["PIA", "PIAParams"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The names above load with their module on first use: entry-point discovery (which imports
    this package) stays torch-free, so ``audit --help`` starts fast."""
    if name in __all__:
        from . import attack

        return getattr(attack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
