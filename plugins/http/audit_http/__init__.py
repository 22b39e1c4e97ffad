"""audit-http: a variation-only target behind an HTTP endpoint (``audit serve`` or an
AUTOMATIC1111-style img2img server). See ``target.py`` and docs/http-protocol.md."""

from .client import Client, RemoteError, RetryPolicy, parse_retry_after

__all__ = ["Client", "RemoteError", "RetryPolicy", "parse_retry_after"]
__version__ = "0.1.0"
