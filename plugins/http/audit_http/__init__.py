"""audit-http: a variation-only target behind an HTTP endpoint (``audit serve`` or an
AUTOMATIC1111-style img2img server). See ``target.py`` and docs/http-protocol.md."""

__all__ = ["Client", "RemoteError", "RetryPolicy", "parse_retry_after"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The names above load with their module on first use: entry-point discovery (which imports
    this package) stays torch-free, so ``audit --help`` starts fast."""
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
