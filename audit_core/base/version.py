"""The version of audit-core (the package root re-exports it as ``audit_core.__version__``)."""

__version__ = "0.1.0"
