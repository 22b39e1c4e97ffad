"""audit-core: membership-inference audits of diffusion models, extended by pluggy plugins."""

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
