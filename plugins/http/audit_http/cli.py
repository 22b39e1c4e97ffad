"""``audit serve``: the command this plugin adds to the CLI through ``register_commands`` (the
core has no web framework; the server is :mod:`audit_http.server`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def serve(
    target: Annotated[str, typer.Option("--target", help="A registered target plugin, e.g. ddim.")],
    model: Annotated[Optional[str], typer.Option("--model", help="The target's model (its `model` param), e.g. builtin:digits-ddpm.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default; any other needs --token-env).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port 1..65535 (0: any free port; the bound one is printed).")] = 8000,
    token_env: Annotated[
        Optional[str], typer.Option("--token-env", help="Name of the environment variable holding the bearer token every request must present.")
    ] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Serve a non-loopback address without a token (anyone who can reach it can query the model).")
    ] = False,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most images per request.")] = 64,
    max_n: Annotated[int, typer.Option("--max-n", min=1, help="Most variations per image per request.")] = 64,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=1 / 1024, help="Largest request body, in MiB.")] = 64.0,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Requests waiting for the model before 503.")] = 64,
    max_pending_mb: Annotated[
        float, typer.Option("--max-pending-mb", min=1 / 1024, help="Request bodies held at once (queued or running), in MiB, before 503.")
    ] = 512.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", min=0.001, help="Seconds a request's whole body may take to arrive (408 after).")
    ] = 60.0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N]")] = "auto",
    param: Annotated[
        list[str], typer.Option("--param", metavar="KEY=VALUE", help="Another target param (repeatable).")
    ] = [],  # noqa: B006
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request (method, path, status).")] = False,
    protocol: Annotated[
        str, typer.Option("--protocol", help="The API to serve: audit (POST /v1/variations), hf (Hugging Face image-to-image) or a1111 (/sdapi/v1/img2img).")
    ] = "audit",
    txt2img: Annotated[
        Optional[str], typer.Option("--txt2img", help="Also serve AUTOMATIC1111-style /sdapi/v1/txt2img with this generator on --model (e.g. diffusers).")
    ] = None,
) -> None:
    """Expose a target's variation API over HTTP (protocol: docs/http-protocol.md)."""
    from .server import Limits, parse_params
    from .server import serve as run_server

    limits = Limits(
        max_batch=max_batch, max_n=max_n, max_body_bytes=int(max_body_mb * (1 << 20)), max_queue=max_queue,
        max_pending_bytes=int(max_pending_mb * (1 << 20)), body_timeout_s=body_timeout,
    )
    run_server(target, model, host, port, token_env, limits, device, parse_params(param), access_log, insecure_no_auth, txt2img, protocol)
