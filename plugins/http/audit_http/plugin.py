"""The hook implementations of audit-http (entry point ``audit = http``): the ``http`` target
(the client) and the ``audit serve`` command (the server) of the audit-variation/1 protocol."""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    """``target: {plugin: http, url: ..., token_env: ...}`` in audit.yaml."""
    register("http", "audit_http.target:HTTPTarget")  # imported on first use


@hookimpl
def register_commands(cli):
    """``audit serve --target PLUGIN --model PATH ...``."""
    from .cli import serve

    cli.command("serve")(serve)


@hookimpl
def register_generators(register):
    """``audit reference build --generator a1111 --param url=...``: an AUTOMATIC1111 txt2img server."""
    register("a1111", "audit_http.txt2img:A1111Generator")
