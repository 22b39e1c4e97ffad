"""``HTTPTarget``: a variation-only (black-box) target behind an HTTP endpoint.

Two protocols (``protocol:`` in the ``target:`` mapping):

- ``audit`` (default): the ``audit-variation/1`` protocol of ``audit serve``
  (docs/http-protocol.md). ``GET /`` supplies T, the image size, channels and the model's
  identity; ``POST /v1/variations`` takes several images with ``n`` variations each and exact
  per-variation seeds.
- ``a1111``: an AUTOMATIC1111-style ``POST /sdapi/v1/img2img`` (``init_images``,
  ``denoising_strength``, ``steps``, ``seed``, ``prompt``, ``n_iter``/``batch_size``); one row per
  request. ``image_size`` must be given; T defaults to 1000 and channels to 3.

``_variations`` (images ``[B]`` with ``n`` seeds each) packs images into requests (``n``
variations per image, as the protocol says) and sends them with at most ``concurrency`` in
flight (a thread pool over one pooled ``httpx.Client``), retrying transient failures (408, 429,
5xx, timeouts, dropped connections) with exponential backoff and jitter, honouring
``Retry-After``. The core's query cache (``Target.variation``) wraps it, so a resumed run or a
sweep never pays for the same query twice. Images travel as 8-bit PNG: inputs read from 8-bit
files round-trip exactly, outputs are quantised to 8 bits.

Seeds: every row carries its seed. The audit protocol echoes the seeds it used, and A1111 servers
report theirs in ``info``; ``describe()["seeds"]`` records whether the endpoint honoured them (runs
are then reproducible) or used its own randomness.

The server is not trusted: its status (``GET /``) and answers are validated against the
protocol's strict models (a negative channel count, a string image size or a 60000-pixel image
is refused), answers larger than the request can need are refused before they are read in full,
and returned images larger than 4x the model's size are refused before they are decoded. Every
such failure is a ``RemoteError`` naming the URL (exit code 2).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Literal
from urllib.parse import urlsplit

import torch
from pydantic import Field, ValidationError, field_validator

from audit_core import secrets, png_b64, ConfigError, VARIATION, Target, TargetContext, TargetParams

from . import protocol as wire  # `protocol` is also a param's name
from .client import Client, RemoteError, RetryPolicy



class HTTPParams(TargetParams):
    """The ``target:`` mapping of ``plugin: http`` (unknown keys are errors)."""

    url: str = Field(description="base URL of the endpoint, e.g. http://127.0.0.1:8000 (no credentials in it)")
    token_env: str | None = Field(None, description="name of the environment variable holding the bearer token")
    protocol: Literal["audit", "a1111"] = Field("audit", description="audit (audit serve) or a1111 (/sdapi/v1/img2img)")
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(
        300.0, gt=0,
        description="seconds to wait for an answer before retrying; includes the time a request waits in the server's queue",
    )
    max_retries: int = Field(5, ge=0, le=100, description="retries of one request on 408/429/5xx/timeouts")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles every retry (with jitter)")
    max_backoff_s: float = Field(30.0, ge=0, description="cap of the retry delay (a Retry-After header can ask for more)")
    rows_per_request: int | None = Field(
        None, ge=1, description="variations per request (audit protocol; default: 64 within the server's limits)"
    )
    image_size: int | None = Field(
        None, ge=1, le=wire.MAX_IMAGE_SIZE, description="override the server's image size (required for a1111)"
    )
    channels: int | None = Field(
        None, ge=1, le=wire.MAX_CHANNELS, description="override the server's channels (a1111 default: 3)"
    )
    num_train_timesteps: int | None = Field(None, ge=2, le=wire.MAX_T, description="override T (a1111 default: 1000)")
    kind: Literal["pixel", "latent"] | None = Field(None, description="override the target kind (a1111 default: latent)")
    prompt: str = Field("", description="a1111: the prompt of rows without a caption")
    cfg_scale: float | None = Field(
        None, ge=0, description="a1111: classifier-free guidance scale sent as `cfg_scale` (unset: the server's default)"
    )
    a1111_options: dict[str, Any] = Field(
        default_factory=lambda: {"sampler_name": "DDIM"},
        description="a1111: more img2img fields (sampler_name, cfg_scale, ...), sent with every request",
    )
    a1111_fix_steps: bool = Field(
        False, description="a1111: the server runs `steps` steps whatever the strength (its img2img_fix_steps option)"
    )
    a1111_seed_bits: int = Field(32, ge=1, le=63, description="a1111: seeds are sent modulo 2**bits")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials: put the token in an environment variable named by token_env")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query string or fragment (secrets belong in token_env)")
        return v.strip().rstrip("/")


def from_png_b64(data: str, channels: int, size: int, source: str = "the endpoint") -> tuple[torch.Tensor, bool]:
    """base64 PNG -> (``[C, S, S]`` in [-1, 1], whether it had to be converted or resized).
    An image over 4x the model's size per side is refused from its header, before decoding;
    ``source`` (the URL) names the culprit in errors."""
    from PIL import Image

    from audit_core import b64_bytes, to_tensor

    if not isinstance(data, str):
        raise RemoteError(f"{source} returned a {type(data).__name__} where a base64 PNG belongs")
    try:
        img = Image.open(io.BytesIO(b64_bytes(data)))
        w, h = img.size
        if w > 4 * size or h > 4 * size:
            raise RemoteError(f"{source} returned a {w}x{h} image for a {size}x{size} model; refused")
        img.load()
    except RemoteError:
        raise
    except Image.DecompressionBombError:
        raise RemoteError(f"{source} returned an image too large to decode for a {size}x{size} model; refused") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the server's
        raise RemoteError(f"{source} returned an image that cannot be decoded: {exc}") from None
    return to_tensor(img, channels, size)


class HTTPTarget(Target):
    name = "http"
    kind = "pixel"
    capabilities = frozenset({VARIATION})
    Params = HTTPParams
    bounded_variations = True  # 8-bit PNGs: every variation is already within [-1, 1]

    def __init__(self, params: HTTPParams, context: TargetContext | None = None):
        super().__init__(params, context)
        p = params
        token = secrets.from_env(p.token_env, "target.token_env") if p.token_env else None
        policy = RetryPolicy(max_retries=p.max_retries, backoff_s=p.backoff_s, max_backoff_s=p.max_backoff_s)
        self.client = Client(p.url, token, p.timeout_s, policy, p.concurrency, token_env=p.token_env)
        del token  # only the client's headers hold it
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.seeds_honoured: bool | None = None
        self.server: dict[str, Any] = {}
        self.resized = 0
        if p.protocol == "audit":
            self._init_audit()
        else:
            self._init_a1111()
        self.kind = p.kind or self.kind
        run_dtype = getattr(self.context, "dtype", "auto")
        # the server runs the model at its own precision (`audit serve --param dtype=fp16`, for one)
        self.precision = {"dtype": "remote", "reason": "the server's precision" + (f" (run.dtype {run_dtype} does not reach a remote model)" if run_dtype != "auto" else "")}

    # ----------------------------------------------------------------- set-up
    def _init_audit(self) -> None:
        p = self.params
        raw = self.client.request("GET", "/", max_bytes=wire.MAX_STATUS_BYTES)
        if not isinstance(raw, dict) or not str(raw.get("protocol", "")).startswith(wire.PROTOCOL_FAMILY):
            raise RemoteError(
                f"{p.url} does not speak the audit-variation protocol (GET / returned no `protocol`); "
                f"for an AUTOMATIC1111 server set protocol: a1111"
            )
        try:
            status = wire.Status.model_validate(raw)
        except ValidationError as exc:
            raise RemoteError(f"{p.url} announced an unusable status (GET /): {wire.first_error(exc)}") from None
        self.server = {k: getattr(status, k) for k in ("protocol", "server", "target", "model", "model_id", "kind", "seeds")}
        self.num_train_timesteps = int(p.num_train_timesteps or status.T)
        self.image_size = int(p.image_size or status.image_size)
        self.channels = int(p.channels or status.channels)
        self.kind = status.kind
        self.server_max_batch = status.limits.max_batch
        self.server_max_n = status.limits.max_n
        self.rows_per_request = int(p.rows_per_request or 64)
        if status.seeds is False:
            self.seeds_honoured = False

    def _init_a1111(self) -> None:
        p = self.params
        if p.image_size is None:
            raise ConfigError("target.image_size: the a1111 protocol cannot report the image size; set image_size")
        self.image_size = int(p.image_size)
        self.channels = int(p.channels or 3)
        self.num_train_timesteps = int(p.num_train_timesteps or 1000)
        self.kind = "latent"
        self.rows_per_request = 1
        try:
            options = self.client.request("GET", "/sdapi/v1/options")
        except RemoteError as exc:
            options = None
            self.stats.notes.append(f"the server's model is unknown (GET /sdapi/v1/options: {exc})")
        if isinstance(options, dict):
            self.server = {
                "protocol": "a1111",
                "model": options.get("sd_model_checkpoint"),
                "model_id": options.get("sd_checkpoint_hash") or options.get("sd_model_checkpoint"),
            }

    # ----------------------------------------------------------------- description
    def identity(self) -> str:
        """url + the server-reported model identity (+ for a1111 what else shapes the output).
        Never the token."""
        p = self.params
        ident = f"http:{p.protocol}:{p.url}:{self.server.get('model_id')}"
        if p.protocol == "a1111":
            extra = {"prompt": p.prompt, "options": p.a1111_options, "fix_steps": p.a1111_fix_steps, "bits": p.a1111_seed_bits}
            if p.cfg_scale is not None:  # unset keeps the identity (and cache keys) of earlier versions
                extra["cfg_scale"] = p.cfg_scale
            ident += ":" + hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return ident

    def seeds_text(self) -> str:
        if self.seeds_honoured is True:
            return "honoured: the endpoint used the per-image seeds (reproducible)"
        if self.seeds_honoured is False:
            return "not honoured: the endpoint's own randomness was used (not reproducible)"
        return "unknown (no variation requested yet)"

    def describe(self) -> dict[str, Any]:
        p = self.params
        c = self.client
        out = {
            **super().describe(),
            "T": self.num_train_timesteps,
            "url": p.url,
            "protocol": p.protocol,
            "server": self.server,
            "seeds": self.seeds_text(),
            "concurrency": p.concurrency,
            "requests": c.requests,
            "retries": c.retries,
            "retry_wait_s": round(c.waited_s, 3),
            "transient_failures": dict(c.failures),
        }
        if self.resized:
            out["resized_outputs"] = self.resized
        if self.stats.notes:
            out["notes"] = list(self.stats.notes)
        return out

    def nfe_per_query(self, t: int, k: int) -> int:
        return t // k if k > 0 else 0

    def max_batch(self) -> int:
        return 1 << 16  # the target splits work into requests itself

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.client.close()

    # ----------------------------------------------------------------- variation
    def _note_seeds(self, honoured: bool) -> None:
        with self._lock:
            if not honoured and self.seeds_honoured is not False:
                self.stats.notes.append("the endpoint did not use the seeds it was sent: its own randomness was used")
                self.seeds_honoured = False
            elif honoured and self.seeds_honoured is None:
                self.seeds_honoured = True

    def _decode(self, data: str) -> torch.Tensor:
        x, changed = from_png_b64(data, self.channels, self.image_size, self.params.url)
        if changed:
            with self._lock:
                if not self.resized:
                    self.stats.notes.append(
                        f"the endpoint returned images of another size or mode; they were converted to "
                        f"{self.channels}x{self.image_size}x{self.image_size}"
                    )
                self.resized += 1
        return x

    def _jobs_audit(self, x, t, k, seeds, captions) -> list[tuple[list[int], dict[str, Any]]]:
        """Images ``[B]`` with ``n`` seeds each -> requests: every image travels once with its
        ``n`` seeds (in pieces of at most the server's ``max_n``); a request packs pieces of equal
        ``n`` within ``rows_per_request`` variations and the server's ``max_batch`` images. Each
        job carries the flat indices (``i * n + j``) of the variations it answers."""
        n = len(seeds[0])
        step = min(n, self.server_max_n)
        pieces = [(i, j0, min(step, n - j0)) for i in range(len(seeds)) for j0 in range(0, n, step)]
        jobs: list[tuple[list[int], dict[str, Any]]] = []
        group: list[tuple[int, int, int]] = []

        def flush() -> None:
            if not group:
                return
            width = group[0][2]
            caps = [captions[i] for i, _, _ in group]
            body: dict[str, Any] = {
                "images": [x[i] for i, _, _ in group],  # tensors: encoded by the sending thread
                "t": int(t),
                "k": int(k),
                "n": width,
                "seed": [[int(s) for s in seeds[i][j0 : j0 + width]] for i, j0, _ in group],
            }
            if any(c is not None for c in caps):
                body["caption"] = caps
            jobs.append(([i * n + j for i, j0, w in group for j in range(j0, j0 + w)], body))
            group.clear()

        for piece in pieces:
            width = piece[2]
            per_request = max(1, min(self.server_max_batch, self.rows_per_request // width))
            if group and (group[0][2] != width or len(group) >= per_request):
                flush()
            group.append(piece)
        flush()
        return jobs

    def _send_audit(self, rows: list[int], body: dict[str, Any]) -> tuple[list[int], torch.Tensor]:
        body = {**body, "images": [png_b64(im) for im in body["images"]]}  # PNG work overlaps requests in flight
        cap = wire.max_answer_bytes(len(rows), self.image_size, self.channels)
        raw = self.client.request("POST", "/v1/variations", json=body, max_bytes=cap)
        url = self.params.url
        try:
            answer = wire.VariationResponse.model_validate(raw)
        except ValidationError as exc:
            raise RemoteError(f"{url} answered POST /v1/variations with {wire.first_error(exc)}") from None
        shape = [len(v) for v in answer.variations]
        if shape != [body["n"]] * len(body["images"]):
            raise RemoteError(
                f"{url} returned {shape} variations per image for {len(body['images'])} image(s) x n={body['n']} requested"
            )
        self._note_seeds(answer.seeds == body["seed"])
        with self._lock:
            nfe = answer.nfe
            self.stats.nfe += nfe if nfe is not None else len(rows) * self.nfe_per_query(body["t"], body["k"])
        return rows, torch.stack([self._decode(v) for per_image in answer.variations for v in per_image])

    def a1111_steps(self, t: int, k: int) -> tuple[float, int]:
        """(denoising_strength, steps) such that an A1111 server runs t/k steps: it runs
        ``int(min(strength, 0.999) * steps)`` of ``steps`` (unless img2img_fix_steps is set)."""
        T = self.num_train_timesteps
        strength = t / T
        want = t // k
        if self.params.a1111_fix_steps:
            return strength, want
        steps = max(want, round(want / strength))
        s = min(strength, 0.999)
        while int(s * steps) < want:  # float rounding: e.g. int(0.29 * 100) == 28
            steps += 1
        while steps > 1 and int(s * (steps - 1)) >= want:
            steps -= 1
        return strength, steps

    def _send_a1111(
        self, row: int, x: torch.Tensor, t: int, k: int, seed: int, caption: str | None, strength: float, steps: int
    ):
        p = self.params
        seed32 = int(seed) % (2**p.a1111_seed_bits)
        body = {
            "init_images": [png_b64(x)],
            "denoising_strength": strength,
            "steps": steps,
            "seed": seed32,
            "subseed": -1,
            "subseed_strength": 0,
            "prompt": caption if caption is not None else p.prompt,
            "n_iter": 1,
            "batch_size": 1,
            "width": self.image_size,
            "height": self.image_size,
            "save_images": False,
            "send_images": True,
            **p.a1111_options,
        }
        if p.cfg_scale is not None:
            body["cfg_scale"] = p.cfg_scale
        # one image, plus room for `parameters` (which echo the request) and `info`
        cap = wire.max_answer_bytes(2, self.image_size, self.channels) + (4 << 20)
        answer = self.client.request("POST", "/sdapi/v1/img2img", json=body, max_bytes=cap)
        images = answer.get("images") if isinstance(answer, dict) else None
        if not images:
            raise RemoteError("the img2img answer has no `images`")
        info = answer.get("info")
        try:
            info = json.loads(info) if isinstance(info, str) else (info or {})
            used = info.get("seed", (info.get("all_seeds") or [None])[0])
            self._note_seeds(used is not None and int(used) == seed32)
        except (ValueError, TypeError, AttributeError):
            pass  # no info: whether seeds are honoured stays unknown
        with self._lock:
            self.stats.nfe += t // k
        return [row], self._decode(images[0])[None]

    def _variations(self, x, t, k, seeds, captions, clip):
        """``[B, n, C, H, W]`` from the endpoint. Its images are 8-bit PNGs, already within
        [-1, 1]: ``clip`` changes nothing (``bounded_variations``)."""
        B, n = len(seeds), len(seeds[0])
        xc = x.detach().to("cpu", torch.float32)
        if self.params.protocol == "audit":
            jobs = [(self._send_audit, rows, body) for rows, body in self._jobs_audit(xc, t, k, seeds, captions)]
        else:
            strength, steps = self.a1111_steps(t, k)  # the same for every variation
            jobs = [
                (self._send_a1111, i * n + j, xc[i], t, k, seeds[i][j], captions[i], strength, steps)
                for i in range(B) for j in range(n)
            ]
        out = torch.empty((B * n, self.channels, self.image_size, self.image_size), dtype=torch.float32)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.params.concurrency, thread_name_prefix="audit-http")
        futures = [self._pool.submit(fn, *args) for fn, *args in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for f in pending:
                f.cancel()
            wait(pending)  # let requests in flight finish before the error propagates
            raise failed[0].exception()
        for f in futures:
            rows, values = f.result()
            out[rows] = values
        return out.reshape(B, n, *out.shape[1:]).to(x.device)
