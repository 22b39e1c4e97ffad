"""``audit serve``: expose any registered target's variation API ``V(x, t, k)`` over HTTP.

The wire protocol (``audit-variation/1``) is documented in ``docs/http-protocol.md``; the
``http`` target plugin (``plugins/http``) is its client. In short:

- ``GET /``: a status JSON (protocol, model, model_id, T, image size, channels, capabilities,
  limits);
- ``POST /v1/variations``: ``{"images": [base64 PNG, ...], "t" | "strength", "k" | "steps",
  "n", "seed", "caption"}`` -> ``{"variations": [[base64 PNG] * n] * B, "seeds": [[int] * n] * B,
  "nfe": int, ...}``.

Security: binds 127.0.0.1 by default. With ``--token-env VAR`` every request (status included)
needs ``Authorization: Bearer <token>`` (compared in constant time) and gets 401 otherwise; the
token is read from the environment and never printed or logged (access logs are off by default
and never include headers). Limits: request body size (413), images per request (``--max-batch``),
variations per image (``--max-n``), queued requests (503 with Retry-After when exceeded).
Malformed requests get 400 with ``{"error": reason}``.

The model runs in one worker thread (under a lock): a request's rows (every image times ``n``) go
to the target in **one** ``variation`` call, so a GPU target sees a full batch. Requests wait
their turn in arrival order; one whose client has disconnected meanwhile (e.g. timed out, to be
retried) is dropped without running the model.
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
import secrets as _pysecrets
import socket
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from . import __version__, seeding
from .data import png_b64
from .errors import AuditError, ConfigError, PluginError
from .targets import VARIATION, Target, TargetContext

try:  # the `serve` extra; module level so that FastAPI can resolve the endpoint annotations
    from starlette.requests import Request
except ImportError:  # pragma: no cover
    Request = Any  # type: ignore[misc,assignment]

PROTOCOL = "audit-variation/1"
SEED_LIMIT = 1 << seeding.SEED_BITS  # seeds are integers 0 <= s < 2**63
log = logging.getLogger("audit.serve")


# ----------------------------------------------------------------------------- seeds
def derive(seed: int, index: int) -> int:
    """Position ``index`` of a seed list derived from ``seed``: the seed itself at index 0,
    else a 63-bit hash of (seed, index). Used for both levels (image within a request, variation
    within an image), so the first m of n variations equal an m-variation request's."""
    if index == 0:
        return int(seed)
    return seeding.hash_seed(f"{int(seed)}/{int(index)}")


def seed_matrix(seed: Any, images: int, n: int) -> list[list[int]]:
    """The ``[images][n]`` seeds a request asks for (see docs/http-protocol.md)."""
    if seed is None:
        seed = _pysecrets.randbits(seeding.SEED_BITS)  # fresh randomness, reported back so the call can be replayed
    if isinstance(seed, int):
        per_image = [derive(seed, i) for i in range(images)]
        return [[derive(s, j) for j in range(n)] for s in per_image]
    if len(seed) != images:
        raise BadRequest(f"`seed` has {len(seed)} entries for {images} image(s)")
    if all(isinstance(s, int) for s in seed):
        return [[derive(s, j) for j in range(n)] for s in seed]
    if all(isinstance(s, list) for s in seed):
        for i, row in enumerate(seed):
            if len(row) != n:
                raise BadRequest(f"`seed[{i}]` has {len(row)} seeds; n={n} were requested")
        return [list(row) for row in seed]
    raise BadRequest("`seed` must be one integer, one integer per image, or one list of n integers per image")


# ----------------------------------------------------------------------------- images
def decode_image(data: str, channels: int, size: int, where: str) -> torch.Tensor:
    """base64 PNG (a ``data:image/png;base64,`` prefix is accepted) -> ``[C, S, S]`` in [-1, 1].

    The image must already be ``size`` x ``size``: the server never resizes (an audit must know
    what the model saw). Grayscale and RGB are converted to the target's channels."""
    from PIL import Image, UnidentifiedImageError

    from .data import b64_bytes, to_tensor

    if not isinstance(data, str) or not data:
        raise BadRequest(f"{where}: expected a base64 string")
    try:
        raw = b64_bytes(data)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: not valid base64") from None
    try:
        img = Image.open(io.BytesIO(raw))
        if img.size != (size, size):  # read from the header: nothing big is decoded
            raise BadRequest(f"{where}: the image is {img.size[0]}x{img.size[1]}; this model takes {size}x{size}")
        img.load()
    except BadRequest:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise BadRequest(f"{where}: not a readable image (send PNG)") from None
    if img.mode not in ("L", "RGB", "RGBA", "LA", "P", "I;16", "I"):
        raise BadRequest(f"{where}: unsupported image mode {img.mode!r} (send 8-bit grayscale or RGB PNG)")
    if img.mode in ("I;16", "I"):
        raise BadRequest(f"{where}: 16-bit images are not supported (send 8-bit PNG)")
    x, _ = to_tensor(img, channels, size)
    return x


# ----------------------------------------------------------------------------- requests
class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class VariationRequest(BaseModel):
    """The JSON body of ``POST /v1/variations`` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str]
    t: int | None = None
    strength: float | None = None
    k: int | None = None
    steps: int | None = None
    n: int = 1
    seed: int | list[int] | list[list[int]] | None = None
    caption: str | list[str | None] | None = None


@dataclass
class Limits:
    max_batch: int = 64  # images per request
    max_n: int = 64  # variations per image
    max_body_bytes: int = 64 << 20
    max_queue: int = 64  # requests waiting for the model before 503

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_n", "max_body_bytes", "max_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"audit serve: {name} must be at least 1, got {getattr(self, name)}")


@dataclass
class Plan:
    """A validated request, ready for the model."""

    x: torch.Tensor  # [B*n, C, S, S] image-major
    t: int
    k: int
    n: int
    seeds: list[list[int]]
    captions: list[str | None]  # one per row


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"`{loc}`: {err.get('msg', 'invalid')}"


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
        self._status = self._describe()

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
    def resolve_tk(self, req: VariationRequest) -> tuple[int, int]:
        T = self.T
        if (req.t is None) == (req.strength is None):
            raise BadRequest("give exactly one of `t` (timestep index) or `strength` (t / T)")
        if req.strength is not None:
            if not 0.0 < req.strength < 1.0:
                raise BadRequest(f"`strength` must satisfy 0 < strength < 1, got {req.strength}")
            t = round(req.strength * T)
        else:
            t = int(req.t)
        if not 0 < t < T:
            raise BadRequest(f"`t` must satisfy 0 < t < T={T}, got {t}")
        if (req.k is None) == (req.steps is None):
            raise BadRequest("give exactly one of `k` (DDIM interval) or `steps` (t / k)")
        if req.steps is not None:
            if not 1 <= req.steps <= t or t % req.steps:
                raise BadRequest(f"`steps` must be between 1 and t={t} and divide it, got {req.steps}")
            k = t // req.steps
        else:
            k = int(req.k)
        if not 1 <= k <= t or t % k:
            raise BadRequest(f"`k` must be between 1 and t={t} and divide it, got {k}")
        return t, k

    def plan(self, body: bytes) -> Plan:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise BadRequest("the body must be a JSON object")
        try:
            req = VariationRequest.model_validate(payload)
        except ValidationError as exc:
            raise BadRequest(_first_error(exc)) from None
        B = len(req.images)
        if B == 0:
            raise BadRequest("`images` is empty")
        if B > self.limits.max_batch:
            raise BadRequest(f"{B} images in one request; this server takes at most {self.limits.max_batch} (--max-batch)")
        if not 1 <= req.n <= self.limits.max_n:
            raise BadRequest(f"`n` must be between 1 and {self.limits.max_n}, got {req.n}")
        t, k = self.resolve_tk(req)
        seeds = seed_matrix(req.seed, B, req.n)
        for row in seeds:
            for s in row:
                if not (isinstance(s, int) and 0 <= s < SEED_LIMIT):
                    raise BadRequest(f"seeds must be integers 0 <= seed < 2**63, got {s!r}")
        if isinstance(req.caption, list):
            if len(req.caption) != B:
                raise BadRequest(f"`caption` has {len(req.caption)} entries for {B} image(s)")
            per_image = list(req.caption)
        else:
            per_image = [req.caption] * B
        tg = self.target
        images = [decode_image(data, tg.channels, tg.image_size, f"images[{i}]") for i, data in enumerate(req.images)]
        x = torch.stack(images).repeat_interleave(req.n, dim=0)
        captions = [c for c in per_image for _ in range(req.n)]
        return Plan(x=x, t=t, k=k, n=req.n, seeds=seeds, captions=captions)

    # --------------------------------------------------------------- the model
    def run(self, plan: Plan) -> tuple[torch.Tensor, int, float]:
        """One ``variation`` call for all rows (on the single model thread, holding ``turn``)."""
        flat = [s for row in plan.seeds for s in row]
        st = self.target.stats
        nfe0, q0 = st.nfe, st.queries
        t0 = time.perf_counter()
        x = plan.x.to(self.target.device)
        with torch.no_grad():
            try:
                out = self.target.variation(x, plan.t, plan.k, flat, plan.captions)
            except (ValueError, AuditError) as exc:
                raise BadRequest(f"the target refused the request: {exc}") from None
        seconds = time.perf_counter() - t0
        nfe = st.nfe - nfe0
        if nfe == 0 and st.queries > q0:  # a variation-only target that does not count NFEs
            nfe = self.target.nfe_per_query(plan.t, plan.k) * (st.queries - q0)
        return out.detach().to("cpu", torch.float32), int(nfe), seconds

    def respond(self, plan: Plan, out: torch.Tensor, nfe: int, seconds: float) -> dict[str, Any]:
        n = plan.n
        pngs = [png_b64(out[i]) for i in range(out.shape[0])]
        return {
            "protocol": PROTOCOL,
            "model_id": self.model_id,
            "t": plan.t,
            "k": plan.k,
            "n": n,
            "variations": [pngs[i : i + n] for i in range(0, len(pngs), n)],
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


class Guard:
    """Pure ASGI middleware in front of the app: the bearer token (401, before the body is
    read) and the body size limit (413, from Content-Length or while streaming)."""

    def __init__(self, app: Any, token: str | None, max_body_bytes: int):
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body_bytes

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

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if not self.authorized(headers):
            await send_json(send, 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")])
            return
        for name, value in headers:
            if name.lower() == b"content-length":
                try:
                    if int(value) > self.max_body:
                        await send_json(send, 413, {"error": f"the body is larger than {self.max_body} bytes"})
                        return
                except ValueError:
                    await send_json(send, 400, {"error": "bad Content-Length"})
                    return
        seen = 0

        async def limited_receive() -> Any:  # a streamed body past the limit: the app answers 413
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        await self.app(scope, limited_receive, send)


# ----------------------------------------------------------------------------- the app
def create_app(service: Service, token: str | None = None) -> Any:
    """The ASGI app (FastAPI behind :class:`Guard`) for ``service``."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    api = FastAPI(title="audit serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @api.exception_handler(_TooLarge)
    async def _large(request: Request, exc: _TooLarge) -> JSONResponse:
        return JSONResponse({"error": f"the body is larger than {service.limits.max_body_bytes} bytes"}, status_code=413)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @api.get("/")
    async def status() -> dict[str, Any]:
        return service.status()

    @api.post("/v1/variations")
    async def variations(request: Request) -> JSONResponse:
        if service.pending >= service.limits.max_queue:
            return JSONResponse({"error": "busy: too many queued requests"}, status_code=503, headers={"Retry-After": "1"})
        service.pending += 1
        try:
            body = await request.body()
            plan = await run_in_threadpool(service.plan, body)  # PNG decoding off the event loop
            async with service.turn:  # requests queue here, in arrival order
                if await request.is_disconnected():  # the client timed out or went away: skip the work
                    service.skipped += 1
                    return JSONResponse({"error": "the client disconnected"}, status_code=499)
                loop = asyncio.get_running_loop()
                out, nfe, seconds = await loop.run_in_executor(service.worker, service.run, plan)
            payload = await run_in_threadpool(service.respond, plan, out, nfe, seconds)
        except (BadRequest, _TooLarge):
            raise
        except Exception:
            from .secrets import scrub

            log.error("internal error while serving a request:\n%s", scrub(traceback.format_exc()))
            return JSONResponse({"error": "internal server error"}, status_code=500)
        finally:
            service.pending -= 1
        service.requests += 1
        return JSONResponse(payload)

    return Guard(api, token, service.limits.max_body_bytes)


# ----------------------------------------------------------------------------- building
def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param key=value`` (value parsed as YAML: numbers, booleans, lists)."""
    from .config import parse_value

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

    from .plugins import construct, lookup

    tcls = lookup("targets", plugin, where="--target")
    values = dict(params or {})
    if model is not None:
        values["model"] = model
    try:
        tparams = tcls.Params.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"target {plugin!r}: {_first_error(exc).replace('`', '')}") from None
    if VARIATION not in tcls.capabilities:
        raise PluginError(f"target {plugin!r} has no variation API to serve")
    return construct(tcls, tparams, TargetContext(device=device, cache=None, config_dir=str(Path.cwd())))


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
) -> None:
    """Build the target and serve it until interrupted (``audit serve``)."""
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - the `serve` extra
        raise PluginError("audit serve needs FastAPI and uvicorn: pip install 'audit-core[serve]'") from None
    from . import secrets

    token = secrets.from_env(token_env, "--token-env") if token_env else None
    limits = limits or Limits()
    if not is_loopback(host):
        msg = f"audit serve: listening on a non-loopback address ({host})"
        print(msg + ("" if token else " WITHOUT a token: anyone who can reach it can query the model"), file=sys.stderr)
    tg = build_target(target, model, device, params)
    service = Service(tg, model or "", limits)
    sock = bind(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    config = uvicorn.Config(
        create_app(service, token), log_level="info", access_log=access_log, lifespan="off",
        timeout_graceful_shutdown=5, server_header=False,
    )
    server = uvicorn.Server(config)
    st = service.status()
    print(
        f"audit serve: {target} ({st['image_size']}x{st['image_size']}x{st['channels']}, T={st['T']}) on "
        f"{tg.device}; auth: {'bearer token from $' + token_env if token else 'none'}",
        flush=True,
    )
    print(f"audit serve: listening on http://{shown}:{bound[1]}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
