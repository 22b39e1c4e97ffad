"""``audit serve``: expose any registered target's variation API ``V(x, t, k)`` over HTTP.

The wire protocol (``audit-variation/1``) is :mod:`audit_http.protocol` (request/answer models,
seeds, t/k), documented in ``docs/http-protocol.md``; the ``http`` target is its client. In short:

- ``GET /``: a status JSON (protocol, model, model_id, T, image size, channels, capabilities,
  limits); ``GET /openapi.json``: the OpenAPI schema (token required like everything else);
- ``POST /v1/variations``: ``{"images": [base64 PNG, ...], "t" | "strength", "k" | "steps",
  "n", "seed", "caption"}`` -> ``{"variations": [[base64 PNG] * n] * B, "seeds": [[int] * n] * B,
  "nfe": int, ...}``.

Security: binds 127.0.0.1 by default and refuses a non-loopback address without a token (unless
``--insecure-no-auth``). With ``--token-env VAR`` every request (status and schema included) needs
``Authorization: Bearer <token>`` (compared in constant time) and gets 401 otherwise; the token is
read from the environment and never printed or logged (access logs are off by default and never
include headers). Limits: request body size (413), images per request (``--max-batch``),
variations per image (``--max-n``), queued requests and the bytes they hold (503 with
Retry-After). Malformed requests (strict types: ``"t": "200"`` is an error; JSON nested too
deeply) get 400 with ``{"error": reason}``.

Memory: a queued request holds its images as PNG bytes (about 3/4 of its body); they are decoded
to tensors only when the request reaches the model, one request at a time. The bodies held at
once are capped by ``--max-pending-mb``.

The model runs in one worker thread (under a lock): a request's images and their ``n`` seeds
each go to the target in **one** ``variation(x[B], t, k, seeds[B][n])`` call, so a GPU target
sees a full batch. Requests wait their turn in arrival order; one whose client has disconnected
meanwhile (e.g. timed out, to be retried) is dropped without running the model.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import io
import ipaddress
import json
import logging
import socket
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import ValidationError

from audit_core import __version__
from audit_core import AuditError, ConfigError, PluginError, VARIATION, Target, TargetContext

from .protocol import (
    PROTOCOL,
    SEED_LIMIT,
    ProtocolError,
    Status,
    VariationRequest,
    VariationResponse,
    derive,
    first_error,
    resolve_tk,
    seed_grid,
)

try:  # module level so that FastAPI can resolve the endpoint annotations
    from starlette.requests import Request
except ImportError:  # pragma: no cover
    Request = Any  # type: ignore[misc,assignment]

__all__ = ["PROTOCOL", "PROTOCOLS", "BadRequest", "Limits", "Service", "create_app", "derive", "serve"]
#: ``audit serve --protocol``: the API each serves (besides ``GET /``, the status)
PROTOCOLS = {
    "audit": "POST /v1/variations (audit-variation/1)",
    "hf": "POST / (Hugging Face image-to-image: {inputs, parameters} -> image bytes)",
    "a1111": "POST /sdapi/v1/img2img, GET /sdapi/v1/options (AUTOMATIC1111 web UI API)",
}
log = logging.getLogger("audit.serve")


# ----------------------------------------------------------------------------- images
def png_payload(data: str, size: int, where: str) -> bytes:
    """base64 PNG (a ``data:image/png;base64,`` prefix is accepted) -> its bytes, after checking
    from the header alone (nothing is decoded) that it is a ``size`` x ``size`` image of a usable
    mode: what a queued request holds until its turn at the model."""
    from audit_core import b64_bytes

    if not data:
        raise BadRequest(f"{where}: expected a base64 string")
    try:
        raw = b64_bytes(data)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: not valid base64") from None
    return image_payload(raw, size, where)


def image_payload(raw: bytes, size: int, where: str) -> bytes:
    """:func:`png_payload` for an image's bytes (a raw request body, an upload)."""
    from PIL import Image, UnidentifiedImageError

    from audit_core import SIXTEEN_BIT_MODES

    try:
        img = Image.open(io.BytesIO(raw))
        mode, (w, h) = img.mode, img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise BadRequest(f"{where}: not a readable image (send PNG)") from None
    if (w, h) != (size, size):
        raise BadRequest(f"{where}: the image is {w}x{h}; this model takes {size}x{size}")
    # 16-bit greyscale is scaled to 8 bits exactly as ``audit run`` reads a 16-bit file
    if mode not in ("L", "RGB", "RGBA", "LA", "P", "I", *SIXTEEN_BIT_MODES):
        raise BadRequest(f"{where}: unsupported image mode {mode!r} (send 8- or 16-bit grayscale or 8-bit RGB PNG)")
    return raw


def decode_png(raw: bytes, channels: int, size: int, where: str) -> torch.Tensor:
    """PNG bytes checked by :func:`png_payload` -> ``[C, S, S]`` in [-1, 1]. The server never
    resizes (an audit must know what the model saw); grayscale and RGB are converted to the
    target's channels."""
    from PIL import Image

    from audit_core import DataError, to_8bit, to_tensor

    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise BadRequest(f"{where}: not a readable image (send PNG)") from None
    try:
        img, _ = to_8bit(img, img.format)  # 16-bit PNG: the same scaling as a file read by audit run
    except DataError as exc:
        raise BadRequest(f"{where}: {exc}") from None
    x, _ = to_tensor(img, channels, size)
    return x


def decode_image(data: str, channels: int, size: int, where: str) -> torch.Tensor:
    """base64 PNG -> ``[C, S, S]`` in [-1, 1] (:func:`png_payload` then :func:`decode_png`)."""
    return decode_png(png_payload(data, size, where), channels, size, where)


# ----------------------------------------------------------------------------- requests
class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class Limits:
    max_batch: int = 64  # images per request
    max_n: int = 64  # variations per image
    max_body_bytes: int = 64 << 20
    max_queue: int = 64  # requests waiting for the model before 503
    max_pending_bytes: int = 512 << 20  # request bodies held at once (queued or running) before 503
    body_timeout_s: float = 60.0  # the whole body must arrive within this (408 otherwise)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_n", "max_body_bytes", "max_queue", "max_pending_bytes", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"audit serve: {name} must be positive, got {getattr(self, name)}")


@dataclass
class Plan:
    """A validated request, waiting for the model: its images still as PNG bytes."""

    pngs: list[bytes]  # one per image, size and mode checked
    t: int
    k: int
    n: int
    seeds: list[list[int]]  # [B][n]
    captions: list[str | None]  # one per image


@dataclass
class Service:
    """The target behind the server: status, validation, and the locked model worker."""

    target: Target
    model: str
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-serve-model")
        self.pending = 0
        self.model_id = hashlib.sha256(self.target.identity().encode()).hexdigest()
        self.T = int(self.target.num_train_timesteps)
        self.requests = 0
        self.skipped = 0  # requests whose client had gone by the time the model was free
        # whose turn it is at the model: requests wait here in arrival order, and the one holding it
        # runs on the single model thread (an asyncio.Lock binds to a loop only when first awaited)
        self.turn = asyncio.Lock()
        self._status = Status.model_validate(self._describe()).model_dump(exclude_none=True)  # what clients check

    def status(self) -> dict[str, Any]:
        """The ``GET /`` answer (fixed for the server's lifetime)."""
        return self._status

    def _describe(self) -> dict[str, Any]:
        tg = self.target
        return {
            "protocol": PROTOCOL,
            "server": f"audit-core {__version__}",
            "target": tg.name,
            "model": self.model,
            "model_id": self.model_id,
            "kind": tg.kind,
            "T": self.T,
            "image_size": int(tg.image_size),
            "channels": int(tg.channels),
            "capabilities": [VARIATION],
            "target_capabilities": sorted(tg.capabilities),
            "seeds": True,
            "captions": tg.kind == "latent",
            "limits": {
                "max_batch": self.limits.max_batch,
                "max_n": self.limits.max_n,
                "max_body_bytes": self.limits.max_body_bytes,
            },
        }

    # --------------------------------------------------------------- validation
    def plan(self, body: bytes) -> Plan:
        """Validate a request body (strict types, bounded nesting, limits, seeds, captions, image
        headers) without decoding any image: a :class:`BadRequest` says what is wrong."""
        try:
            # pydantic's own JSON parser: strict, bounded nesting depth, no intermediate dict
            req = VariationRequest.model_validate_json(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err.get("type") == "json_invalid":
                raise BadRequest(f"the body is not valid JSON: {err.get('msg', '')}") from None
            if err.get("type") == "model_type":
                raise BadRequest("the body must be a JSON object") from None
            raise BadRequest(first_error(exc)) from None
        del body  # the images now live in `req` only
        B = len(req.images)
        if B == 0:
            raise BadRequest("`images` is empty")
        if B > self.limits.max_batch:
            raise BadRequest(f"{B} images in one request; this server takes at most {self.limits.max_batch} (--max-batch)")
        if not 1 <= req.n <= self.limits.max_n:
            raise BadRequest(f"`n` must be between 1 and {self.limits.max_n}, got {req.n}")
        try:
            t, k = resolve_tk(req, self.T)
            seeds = seed_grid(req.seed, B, req.n)
        except ProtocolError as exc:
            raise BadRequest(exc.reason) from None
        for row in seeds:
            for s in row:
                if not (isinstance(s, int) and 0 <= s < SEED_LIMIT):
                    raise BadRequest(f"seeds must be integers 0 <= seed < 2**63, got {s!r}")
        if isinstance(req.caption, list):
            if len(req.caption) != B:
                raise BadRequest(f"`caption` has {len(req.caption)} entries for {B} image(s)")
            captions = list(req.caption)
        else:
            captions = [req.caption] * B
        size = int(self.target.image_size)
        pngs = []
        for i in range(B):
            pngs.append(png_payload(req.images[i], size, f"images[{i}]"))
            req.images[i] = ""  # drop each base64 string once its bytes are kept
        return Plan(pngs=pngs, t=t, k=k, n=req.n, seeds=seeds, captions=captions)

    # --------------------------------------------------------------- the model
    def run(self, plan: Plan) -> tuple[torch.Tensor, int, float]:
        """Decode the images and make one ``variation(x[B], t, k, seeds[B][n])`` call (on the
        single model thread, holding ``turn``) -> ``[B, n, C, S, S]``."""
        tg = self.target
        x = torch.stack([decode_png(raw, tg.channels, tg.image_size, f"images[{i}]") for i, raw in enumerate(plan.pngs)])
        plan.pngs = []  # decoded: the PNG bytes are no longer needed
        st = tg.stats
        nfe0, q0 = st.nfe, st.queries
        t0 = time.perf_counter()
        with torch.no_grad():
            try:
                out = tg.variation(x.to(tg.device), plan.t, plan.k, plan.seeds, plan.captions)
            except (ValueError, AuditError) as exc:
                raise BadRequest(f"the target refused the request: {exc}") from None
        seconds = time.perf_counter() - t0
        nfe = st.nfe - nfe0
        if nfe == 0 and st.queries > q0:  # a variation-only target that does not count NFEs
            nfe = tg.nfe_per_query(plan.t, plan.k) * (st.queries - q0)
        return out.detach().to("cpu", torch.float32), int(nfe), seconds

    def respond(self, plan: Plan, out: torch.Tensor, nfe: int, seconds: float) -> dict[str, Any]:
        """The answer: ``variations[i][j]`` is variation j of image i, as it came from the target."""
        from audit_core import png_b64

        return {
            "protocol": PROTOCOL,
            "model_id": self.model_id,
            "t": plan.t,
            "k": plan.k,
            "n": plan.n,
            "variations": [[png_b64(v) for v in per_image] for per_image in out],
            "seeds": plan.seeds,
            "nfe": nfe,
            "seconds": round(seconds, 6),
        }

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        self.target.close()


# ----------------------------------------------------------------------------- ASGI guard
class _TooLarge(Exception):
    pass


async def send_json(send: Any, status: int, obj: Any, headers: list | None = None) -> None:
    """Answer an ASGI request with a JSON body (below the app: no framework needed)."""
    body = json.dumps(obj).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (headers or []),
    })
    await send({"type": "http.response.body", "body": body})


class _TooSlow(Exception):
    pass


class _Busy(Exception):
    pass


#: Host names a server without a token answers to (any port): a page on another site that
#: resolves its own name to 127.0.0.1 (DNS rebinding) sends its own name, and is refused
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: methods whose body is read: only JSON bodies are accepted (a cross-site "simple request",
#: text/plain or a form, needs no CORS preflight, so any web page could send one)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = frozenset({b"application/json"})


def host_name(value: bytes) -> str | None:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]``, ``[v6]:port``),
    lower-cased; None when the header is malformed."""
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1 :]
    else:
        name, _, port = text.partition(":")
        rest = ":" + port if _ else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return name or None


def is_json(value: bytes) -> bool:
    """Whether a ``Content-Type`` is JSON (``application/json``, parameters such as
    ``; charset=utf-8`` allowed)."""
    return value.split(b";", 1)[0].strip().lower() in JSON_TYPES


class Guard:
    """Pure ASGI middleware in front of the app: the bearer token (401, before the body is
    read); without a token, the ``Host`` header (only the loopback names: 403, so that a web page
    cannot reach the server through DNS rebinding) and the content type of a body (JSON only: 415,
    so that a web page cannot send a cross-site "simple" POST); the body size limit (413, from
    Content-Length or while streaming); a deadline for reading the whole body (408: a client that
    trickles or stalls cannot hold a connection and its bytes); and the bytes of request bodies
    held at once (503 with Retry-After past ``max_pending_bytes``), counted as they arrive."""

    def __init__(
        self, app: Any, token: str | None, max_body_bytes: int, max_pending_bytes: int | None = None,
        body_timeout_s: float = 60.0, local_only: bool | None = None, body_types: tuple[str, ...] = (),
    ):
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body_bytes
        self.max_pending = max_pending_bytes if max_pending_bytes is not None else 8 * max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.body_types = tuple(t.encode() for t in body_types)  # accepted besides JSON (prefixes, e.g. image/)
        # the Host check: on by default without a token (off only for an explicitly insecure bind)
        self.local_only = self.token is None if local_only is None else local_only
        self.pending_bytes = 0  # body bytes received and not yet answered (all requests together)

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.token is None:
            return True
        presented = b""
        for name, value in headers:
            if name.lower() == b"authorization":
                presented = value
                break
        scheme, _, cred = presented.partition(b" ")
        ok_scheme = scheme.lower() == b"bearer"
        # compare_digest runs in time independent of where the strings differ
        ok_token = hmac.compare_digest(cred.strip(), self.token)
        return ok_scheme and ok_token

    @staticmethod
    def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
        for name, value in headers:
            if name.lower() == wanted:
                return value
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if not self.authorized(headers):
            await send_json(send, 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")])
            return
        if self.local_only:
            host = host_name(self._header(headers, b"host") or b"")
            if host not in LOCAL_HOSTS:
                await send_json(send, 403, {
                    "error": "this server has no token and answers only requests addressed to localhost, "
                             "127.0.0.1 or [::1] (Host header)"})
                return
        method = scope.get("method", "GET")
        # without a token, only bodies a web page cannot send cross-site without a CORS preflight;
        # with one, the Authorization header already forces the preflight
        if method in BODY_METHODS and self.token is None:
            ctype = self._header(headers, b"content-type")
            if ctype is None or not (is_json(ctype) or ctype.strip().lower().startswith(self.body_types or (b"\0",))):
                kinds = "JSON" + "".join(f" or {t.decode()}*" for t in self.body_types)
                await send_json(send, 415, {"error": f"the body must be {kinds} (Content-Type: application/json)"})
                return
        declared = None
        raw = self._header(headers, b"content-length")
        if raw is not None:
            try:
                declared = int(raw)
            except ValueError:
                await send_json(send, 400, {"error": "bad Content-Length"})
                return
            if declared > self.max_body:
                await send_json(send, 413, {"error": f"the body is larger than {self.max_body} bytes"})
                return
        # refused up front when the bytes held now and the declared body would not fit; nothing
        # is reserved (a client that declares much and sends little holds only what it sent)
        if declared and self.pending_bytes + declared > self.max_pending:
            await send_json(send, 503, {"error": "busy: too many request bytes queued"}, [(b"retry-after", b"1")])
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        seen = 0
        done = method not in BODY_METHODS

        async def limited_receive() -> Any:
            nonlocal seen, done
            if done:  # the body is complete: waiting for a disconnect has no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise _TooSlow from None
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                seen += chunk
                self.pending_bytes += chunk
                done = not message.get("more_body", False)
                if seen > self.max_body:  # a streamed body past the limit: the app answers 413
                    raise _TooLarge
                if self.pending_bytes > self.max_pending:
                    raise _Busy
            else:
                done = True
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.pending_bytes -= seen


# ----------------------------------------------------------------------------- the app
def create_app(service: Service, token: str | None = None, protocol: str = "audit", local_only: bool | None = None) -> Any:
    """The ASGI app (FastAPI behind :class:`Guard`) for ``service``. Its OpenAPI schema is at
    ``/openapi.json``, behind the token like every other path. ``protocol``: the API served
    besides ``GET /``: ``audit`` (``POST /v1/variations``), ``hf`` (Hugging Face image-to-image,
    ``POST /``) or ``a1111`` (``/sdapi/v1/img2img``): :mod:`audit_http.services`. ``local_only``
    (default: when there is no token): answer only requests whose Host header is a loopback name."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    api = FastAPI(
        title="audit serve", version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json",
        description=f"The {PROTOCOL} variation API (docs/http-protocol.md).",
    )
    errors = {"description": "the request was refused: `error` says why", "content": {
        "application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}

    @api.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @api.exception_handler(_TooLarge)
    async def _large(request: Request, exc: _TooLarge) -> JSONResponse:
        return JSONResponse({"error": f"the body is larger than {service.limits.max_body_bytes} bytes"}, status_code=413)

    @api.exception_handler(_TooSlow)
    async def _slow(request: Request, exc: _TooSlow) -> JSONResponse:
        return JSONResponse({"error": f"the body did not arrive within {guard.body_timeout_s:g} s"}, status_code=408,
                            headers={"Connection": "close"})

    @api.exception_handler(_Busy)
    async def _busy(request: Request, exc: _Busy) -> JSONResponse:
        return JSONResponse({"error": "busy: too many request bytes queued"}, status_code=503,
                            headers={"Retry-After": "1", "Connection": "close"})

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @api.get("/", response_model=None, responses={200: {"model": Status}}, summary="the model's shape, schedule, identity and limits")
    async def status() -> dict[str, Any]:
        return service.status()

    if protocol != "audit":
        from .services import mount

        mount(api, service, protocol)
        # hf also takes the raw image bytes as the body (image/*: not a CORS "simple" type either)
        guard = Guard(api, token, service.limits.max_body_bytes, service.limits.max_pending_bytes,
                      service.limits.body_timeout_s, local_only, body_types=("image/",) if protocol == "hf" else ())
        return guard

    @api.post(
        "/v1/variations",
        summary="n variations V(x, t, k) of each image",
        response_model=None,  # documented by `responses`; the handler answers JSONResponse itself
        responses={200: {"model": VariationResponse}, 400: errors, 401: errors, 413: errors, 503: errors},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": VariationRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
    )
    async def variations(request: Request) -> JSONResponse:
        if service.pending >= service.limits.max_queue:
            return JSONResponse({"error": "busy: too many queued requests"}, status_code=503, headers={"Retry-After": "1"})
        service.pending += 1
        try:
            # the body is read from the stream, not request.body() (which would keep a copy on the
            # request for its lifetime): once validated, only the plan's PNG bytes stay while queued
            body = b"".join([chunk async for chunk in request.stream()])
            plan = await run_in_threadpool(service.plan, body)  # validation off the event loop
            del body
            async with service.turn:  # requests queue here, in arrival order
                if await request.is_disconnected():  # the client timed out or went away: skip the work
                    service.skipped += 1
                    return JSONResponse({"error": "the client disconnected"}, status_code=499)
                loop = asyncio.get_running_loop()
                out, nfe, seconds = await loop.run_in_executor(service.worker, service.run, plan)
            payload = await run_in_threadpool(service.respond, plan, out, nfe, seconds)
        except (BadRequest, _TooLarge, _TooSlow, _Busy):
            raise
        except Exception:
            from audit_core import secrets

            log.error("internal error while serving a request:\n%s", secrets.scrub(traceback.format_exc()))
            return JSONResponse({"error": "internal server error"}, status_code=500)
        finally:
            service.pending -= 1
        service.requests += 1
        return JSONResponse(payload)

    guard = Guard(api, token, service.limits.max_body_bytes, service.limits.max_pending_bytes,
                  service.limits.body_timeout_s, local_only)
    return guard


# ----------------------------------------------------------------------------- building
def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param key=value`` (value parsed as YAML: numbers, booleans, lists)."""
    from audit_core import parse_value

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        out[key] = parse_value(value)
    return out


def build_target(plugin: str, model: str | None, device: str = "auto", params: dict[str, Any] | None = None) -> Target:
    """A registered target with Params ``{model: PATH, **params}`` (errors exit with 2)."""
    from pathlib import Path

    from audit_core import build_plugin

    values = dict(params or {})
    if model is not None:
        values["model"] = model
    return build_plugin(  # looked up, validated (the one wording), created; refused without a variation API
        "targets", plugin, values, TargetContext(device=device, cache=None, config_dir=str(Path.cwd())),
        where="--target", requires=VARIATION,
    )


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r}: {exc.strerror}") from None
    family, socktype, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it Nagle + delayed ACKs add ~40 ms to every response
    sock = socket.socket(family, socktype, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def check_bind(host: str, port: int, token: str | None, insecure_no_auth: bool = False) -> None:
    """Refuse a port outside 0..65535 and a non-loopback address without a token (unless the
    operator explicitly accepts an unauthenticated server with ``--insecure-no-auth``)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is 1..65535 (or 0 for any free port)")
    if not is_loopback(host) and not token:
        if not insecure_no_auth:
            raise ConfigError(
                f"audit serve: refusing to listen on the non-loopback address {host} without a token: anyone who "
                f"can reach it could query the model. Put a token in an environment variable and pass --token-env VAR, "
                f"or bind 127.0.0.1; --insecure-no-auth serves without one anyway"
            )
        print(
            f"audit serve: listening on {host} WITHOUT a token (--insecure-no-auth): anyone who can reach it can "
            f"query the model",
            file=sys.stderr,
        )


def serve(
    target: str,
    model: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token_env: str | None = None,
    limits: Limits | None = None,
    device: str = "auto",
    params: dict[str, Any] | None = None,
    access_log: bool = False,
    insecure_no_auth: bool = False,
    txt2img: str | None = None,
    protocol: str = "audit",
) -> None:
    """Build the target and serve it until interrupted (``audit serve``). Everything is
    checked (port, token, bind address, target params) before the model is loaded."""
    import uvicorn

    from audit_core import secrets

    token = secrets.from_env(token_env, "--token-env") if token_env else None
    check_bind(host, port, token, insecure_no_auth)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    limits = limits or Limits()
    sock = bind(host, port)  # before the model loads: a taken port costs no model load
    try:
        tg = build_target(target, model, device, params)
    except BaseException:
        sock.close()
        raise
    service = Service(tg, model or "", limits)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    # without a token only loopback Host names are answered, unless the operator chose to serve
    # a non-loopback address without one (--insecure-no-auth: clients then name that address)
    app = create_app(service, token, protocol, local_only=None if is_loopback(host) else False)
    if txt2img:
        try:
            from audit_http.txt2img import serve_generator  # lives with audit serve in the http plugin
        except ImportError:
            raise PluginError("audit serve --txt2img needs the audit-http plugin: pip install -e plugins/http") from None
        serve_generator(app, txt2img, model, device)
    config = uvicorn.Config(
        app, log_level="info", access_log=access_log, lifespan="off",
        timeout_graceful_shutdown=5, server_header=False,
    )
    server = uvicorn.Server(config)
    st = service.status()
    print(
        f"audit serve: {target} ({st['image_size']}x{st['image_size']}x{st['channels']}, T={st['T']}) on "
        f"{tg.device}; auth: {'bearer token from $' + token_env if token else 'none'}",
        flush=True,
    )
    print(f"audit serve: protocol {protocol}: {PROTOCOLS[protocol]}", flush=True)
    print(f"audit serve: listening on http://{shown}:{bound[1]}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
