"""audit-secmia: the SecMI grey-box membership-inference attack (Duan et al., ICML 2023).

See :mod:`audit_secmia.attack` for the attack and :mod:`audit_secmia.plugin` for the hook.
"""

__all__ = ["SecMIA", "SecMIParams"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The names above load with their module on first use: entry-point discovery (which imports
    this package) stays torch-free, so ``audit --help`` starts fast."""
    if name in __all__:
        from . import attack

        return getattr(attack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
