"""audit-http: a variation-only target behind an HTTP endpoint (``audit serve`` or an
AUTOMATIC1111-style img2img server). See ``target.py`` and docs/http-protocol.md."""

from audit_core import lazy_exports

__all__ = ["Client", "RemoteError", "RetryPolicy", "parse_retry_after"]
__version__ = "0.1.0"


# the names above load with .client on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "client")
