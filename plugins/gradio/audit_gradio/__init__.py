"""audit-gradio: a variation-only target behind an image-to-image Gradio app, called through
``gradio_client`` (see ``target.py``). Importing the package loads nothing heavy: entry-point
discovery (``audit --help``, ``audit plugins``) never imports gradio_client."""

from audit_core import lazy_exports

__all__ = ["GradioTarget", "GradioParams"]
__version__ = "0.1.0"

__getattr__ = lazy_exports(__name__, __all__, "target")
