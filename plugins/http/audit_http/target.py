"""``HTTPTarget``: a variation-only (black-box) target behind an HTTP endpoint.

Two protocols (``protocol:`` in the ``target:`` mapping):

- ``audit`` (default): the ``audit-variation/1`` protocol of ``audit serve``
  (docs/http-protocol.md). ``GET /`` supplies T, the image size, channels and the model's
  identity; ``POST /v1/variations`` takes several images with ``n`` variations each and exact
  per-variation seeds.
- ``a1111``: an AUTOMATIC1111-style ``POST /sdapi/v1/img2img`` (``init_images``,
  ``denoising_strength``, ``steps``, ``seed``, ``prompt``, ``n_iter``/``batch_size``); one row per
  request. ``image_size`` must be given; T defaults to 1000 and channels to 3. The body has the
  fields and types of webuiapi's img2img (:data:`A1111_DEFAULTS`).
- ``hf``: Hugging Face image-to-image, ``POST <url>`` ``{"inputs", "parameters"}`` -> the image's
  bytes; ``hf_parameters`` maps t/k and the seed onto ``parameters`` (:mod:`audit_http.mapping`).
- ``comfyui``: ``POST /upload/image``, ``POST /prompt`` with an img2img graph template,
  ``GET /history/{id}`` until done, ``GET /view``.

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
and returned images of another size than the model's are refused before they are decoded. Every
such failure is a ``RemoteError`` naming the URL (exit code 2).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import torch
from pydantic import Field, ValidationError, field_validator

from audit_core import secrets, png_b64, ConfigError, TargetContext, TargetParams

from . import mapping
from . import protocol as wire  # `protocol` is also a param's name
from .client import Client, RemoteError, RetryPolicy
from .remote import RemoteTarget



#: hf: the default `parameters` of an image-to-image request (diffusers' img2img names)
HF_PARAMETERS = {"strength": "{strength}", "num_inference_steps": "{total_steps}", "seed": "{seed}"}
#: comfyui: the packaged img2img graph (API format), LoadImage -> VAEEncode -> KSampler -> VAEDecode -> SaveImage
COMFYUI_WORKFLOW = Path(__file__).with_name("comfyui_img2img.json")
#: what a1111 sends besides the variation's own fields: webuiapi's img2img payload, field by field
#: (same names, same types), with the values an audit needs (eta 0: deterministic DDIM)
A1111_DEFAULTS: dict[str, Any] = {
    "resize_mode": 0, "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True, "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0, "initial_noise_multiplier": 1, "styles": [], "seed_resize_from_h": 0,
    "seed_resize_from_w": 0, "image_cfg_scale": 1.5, "restore_faces": False, "tiling": False,
    "do_not_save_samples": True, "do_not_save_grid": True, "negative_prompt": "", "eta": 0.0, "s_churn": 0,
    "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": True,
    "scheduler": "automatic", "include_init_images": False, "script_name": None, "script_args": [],
    "alwayson_scripts": {},
}


class HTTPParams(TargetParams):
    """The ``target:`` mapping of ``plugin: http`` (unknown keys are errors)."""

    url: str = Field(description="base URL of the endpoint, e.g. http://127.0.0.1:8000 (no credentials in it)")
    token_env: str | None = Field(None, description="name of the environment variable holding the bearer token")
    protocol: Literal["audit", "a1111", "hf", "comfyui"] = Field(
        "audit", description="audit (audit serve), a1111 (/sdapi/v1/img2img), hf (Hugging Face image-to-image) or comfyui"
    )
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(
        300.0, gt=0,
        description="seconds a whole answer may take before the request is retried (a deadline, not per read); includes the time a request waits in the server's queue",
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
    model_id: str | None = Field(
        None, description="hf, comfyui: the served model's name or version (they cannot report it); part of the cache key"
    )
    seed_bits: int = Field(32, ge=1, le=63, description="hf, comfyui: seeds are sent modulo 2**bits")
    hf_parameters: dict[str, Any] = Field(
        default_factory=lambda: dict(HF_PARAMETERS),
        description="hf: the request's `parameters`, with placeholders {strength} {total_steps} {steps} {t} {k} {seed} {prompt}",
    )
    comfyui_workflow: str | None = Field(
        None, description="comfyui: a workflow (API format) JSON template file; default: the packaged img2img graph"
    )
    comfyui_output: str | None = Field(None, description="comfyui: the id of the node whose image is the variation (default: the first SaveImage)")
    poll_s: float = Field(0.2, gt=0, le=60, description="comfyui: seconds between two GET /history polls")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v)


def check_url(v: str) -> str:
    """An endpoint's base URL: http(s), a host, no credentials, query string or fragment (secrets
    belong in environment variables), no trailing slash."""
    parts = urlsplit(v.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials: put the token in an environment variable named by token_env")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query string or fragment (secrets belong in token_env)")
    return v.strip().rstrip("/")


def from_png_b64(data: str, channels: int, size: int, source: str = "the endpoint") -> tuple[torch.Tensor, bool]:
    """base64 PNG -> (``[C, S, S]`` in [-1, 1], whether its mode had to be converted).
    An image of another size than the model's is refused from its header, before decoding;
    ``source`` (the URL) names the culprit in errors."""
    from PIL import Image

    from audit_core import b64_bytes, to_tensor

    if not isinstance(data, str):
        raise RemoteError(f"{source} returned a {type(data).__name__} where a base64 PNG belongs")
    try:
        img = Image.open(io.BytesIO(b64_bytes(data)))
        w, h = img.size
        if (w, h) != (size, size):  # read from the header: never decoded, never resized
            raise RemoteError(
                f"{source} returned a {w}x{h} variation for a {size}x{size} model; a variation has the model's size "
                f"(resizing it would audit something the model did not produce): refused"
            )
        img.load()
    except RemoteError:
        raise
    except Image.DecompressionBombError:
        raise RemoteError(f"{source} returned an image too large to decode for a {size}x{size} model; refused") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the server's
        raise RemoteError(f"{source} returned an image that cannot be decoded: {exc}") from None
    return to_tensor(img, channels, size)


class HTTPTarget(RemoteTarget):
    name = "http"
    kind = "pixel"
    Params = HTTPParams

    def __init__(self, params: HTTPParams, context: TargetContext | None = None):
        super().__init__(params, context)
        p = params
        token = secrets.from_env(p.token_env, "target.token_env") if p.token_env else None
        policy = RetryPolicy(max_retries=p.max_retries, backoff_s=p.backoff_s, max_backoff_s=p.max_backoff_s)
        self.client = self.calls = Client(p.url, token, p.timeout_s, policy, p.concurrency, token_env=p.token_env)
        del token  # only the client's headers hold it
        self.server: dict[str, Any] = {}
        {"audit": self._init_audit, "a1111": self._init_a1111, "hf": self._init_hf, "comfyui": self._init_comfyui}[p.protocol]()
        self.kind = p.kind or self.kind

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

    def _init_shape(self, default_kind: str) -> None:
        """hf, comfyui: the services cannot report the model's shape or schedule: params only."""
        p = self.params
        if p.image_size is None:
            raise ConfigError(f"target.image_size: the {p.protocol} protocol cannot report the image size; set image_size")
        self.image_size = int(p.image_size)
        self.channels = int(p.channels or 3)
        self.num_train_timesteps = int(p.num_train_timesteps or 1000)
        self.kind = default_kind
        self.rows_per_request = 1
        self.server = {"protocol": p.protocol, "model_id": p.model_id}

    def _init_hf(self) -> None:
        p = self.params
        self._init_shape("latent")
        used = mapping.check(p.hf_parameters, "target.hf_parameters", tuple(x for x in mapping.PLACEHOLDERS if x != "image"))
        self.seeds_checked = False  # the answer is the image alone (audit serve adds an x-seed header)
        if "seed" not in used:
            self._no_seed("target.hf_parameters")

    def _init_comfyui(self) -> None:
        p = self.params
        self._init_shape("latent")
        path = Path(p.comfyui_workflow) if p.comfyui_workflow else COMFYUI_WORKFLOW
        if not path.is_absolute() and p.comfyui_workflow:
            path = Path(getattr(self.context, "config_dir", None) or ".") / path
        try:
            self.workflow = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"target.comfyui_workflow: cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(f"target.comfyui_workflow: {path} is not JSON: {exc}") from None
        if not isinstance(self.workflow, dict) or not all(
            isinstance(node, dict) and "class_type" in node for node in self.workflow.values()
        ):
            raise ConfigError(f"target.comfyui_workflow: {path} is not a ComfyUI graph in API format ({{id: {{class_type, inputs}}}})")
        used = mapping.check(self.workflow, f"target.comfyui_workflow ({path.name})")
        if "image" not in used:
            raise ConfigError(f"target.comfyui_workflow: {path} has no {{image}} (the LoadImage input)")
        self.output_node = p.comfyui_output or next(
            (nid for nid, node in self.workflow.items() if node.get("class_type") == "SaveImage"), None
        )
        if self.output_node not in self.workflow:
            raise ConfigError(f"target.comfyui_output: the graph has no node {self.output_node!r} (set the node whose image is the variation)")
        self.workflow_sha = hashlib.sha256(json.dumps(self.workflow, sort_keys=True).encode()).hexdigest()[:16]
        self.client_id = uuid.uuid4().hex
        self.seeds_checked = False  # the history echoes the graph, not what the sampler did with it
        if "seed" not in used:
            self._no_seed(f"target.comfyui_workflow ({path.name})")

    # ----------------------------------------------------------------- description
    def identity(self) -> str:
        """url + the server-reported model identity (+ for a1111 what else shapes the output).
        Never the token."""
        p = self.params
        ident = f"http:{p.protocol}:{p.url}:{self.server.get('model_id')}"
        extra: dict[str, Any] | None = None
        if p.protocol == "a1111":
            extra = {"prompt": p.prompt, "options": p.a1111_options, "fix_steps": p.a1111_fix_steps, "bits": p.a1111_seed_bits}
            if p.cfg_scale is not None:  # unset keeps the identity (and cache keys) of earlier versions
                extra["cfg_scale"] = p.cfg_scale
        elif p.protocol == "hf":
            extra = {"prompt": p.prompt, "parameters": p.hf_parameters, "bits": p.seed_bits, "T": self.num_train_timesteps}
        elif p.protocol == "comfyui":
            extra = {"prompt": p.prompt, "graph": self.workflow_sha, "output": self.output_node, "bits": p.seed_bits,
                     "T": self.num_train_timesteps}
        if extra is not None:
            ident += ":" + hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return ident

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {
            **super().describe(),
            "T": self.num_train_timesteps,
            "url": p.url,
            "protocol": p.protocol,
            "server": self.server,
            **self.describe_calls(),
        }

    def close(self) -> None:
        super().close()
        self.client.close()

    # ----------------------------------------------------------------- variation
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
        if self.params.a1111_fix_steps:
            return t / T, t // k
        return t / T, mapping.total_steps(t, k, T)

    def a1111_body(self, image_b64: str, strength: float, steps: int, seed: int, prompt: str) -> dict[str, Any]:
        """The img2img request of one variation: the fields and types webuiapi sends
        (:data:`A1111_DEFAULTS`), then ``a1111_options``."""
        p = self.params
        sampler = str(p.a1111_options.get("sampler_name", "DDIM"))
        body = {
            **A1111_DEFAULTS,
            "init_images": ["data:image/png;base64," + image_b64],
            "denoising_strength": float(strength),
            "prompt": prompt,
            "seed": int(seed),
            "subseed": -1,
            "subseed_strength": 0,
            "batch_size": 1,
            "n_iter": 1,
            "steps": int(steps),
            "cfg_scale": float(p.cfg_scale) if p.cfg_scale is not None else 7.0,  # unset: A1111's own default
            "width": self.image_size,
            "height": self.image_size,
            "sampler_name": sampler,
            "sampler_index": sampler,
            "send_images": True,
            "save_images": False,
        }
        body.update(p.a1111_options)
        return body

    def _send_a1111(
        self, row: int, x: torch.Tensor, t: int, k: int, seed: int, caption: str | None, strength: float, steps: int
    ):
        p = self.params
        seed32 = int(seed) % (2**p.a1111_seed_bits)
        body = self.a1111_body(png_b64(x), strength, steps, seed32, caption if caption is not None else p.prompt)
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

    def _image_cap(self) -> int:
        """The most bytes one returned image may take (an 8-bit PNG of up to 4x the model's size
        per side, uncompressed, or anything smaller)."""
        return 16 * wire.png_bytes_bound(self.image_size, self.channels) + (1 << 20)

    def _send_hf(self, row: int, x: torch.Tensor, t: int, k: int, seed: int, caption: str | None):
        """Hugging Face image-to-image: ``POST <url>`` ``{"inputs": <base64 PNG>, "parameters":
        {...}}`` (``hf_parameters`` filled in) -> the image's bytes."""
        p = self.params
        vals = mapping.values(t, k, self.num_train_timesteps, seed, p.seed_bits, caption if caption is not None else p.prompt)
        body = {"inputs": png_b64(x), "parameters": mapping.fill(p.hf_parameters, vals)}
        raw, headers = self.client.request(
            "POST", "", json=body, raw=True, max_bytes=self._image_cap(), headers={"Accept": "image/png"}
        )
        if headers.get("x-seed") is not None:  # a server that reports the seed it used (audit serve does)
            try:
                self._note_seeds(int(headers["x-seed"]) == vals["seed"])
            except ValueError:
                pass
        with self._lock:
            self.stats.nfe += t // k
        return [row], self._decode_bytes(raw, "image-to-image", headers.get("content-type", ""))[None]

    def _send_comfyui(self, row: int, x: torch.Tensor, t: int, k: int, seed: int, caption: str | None):
        """ComfyUI: upload the image (``POST /upload/image``), queue the graph with it
        (``POST /prompt``), poll ``GET /history/{prompt_id}`` until it has run, fetch the output
        image (``GET /view``)."""
        p = self.params
        url = p.url
        name = f"audit-{uuid.uuid4().hex}.png"
        up = self.client.request(
            "POST", "/upload/image", files={"image": (name, base64.b64decode(png_b64(x)), "image/png")},
            data={"type": "input", "overwrite": "true"},
        )
        if not isinstance(up, dict) or not isinstance(up.get("name"), str):
            raise RemoteError(f"{url} answered POST /upload/image without the stored file's `name`")
        image = f"{up['subfolder']}/{up['name']}" if up.get("subfolder") else up["name"]
        vals = mapping.values(t, k, self.num_train_timesteps, seed, p.seed_bits, caption if caption is not None else p.prompt, image)
        graph = mapping.fill(self.workflow, vals)
        queued = self.client.request("POST", "/prompt", json={"prompt": graph, "client_id": self.client_id})
        pid = queued.get("prompt_id") if isinstance(queued, dict) else None
        if not isinstance(pid, str) or not pid:
            raise RemoteError(f"{url} answered POST /prompt without a `prompt_id`")
        deadline = time.monotonic() + p.timeout_s
        while True:
            history = self.client.request("GET", f"/history/{pid}")
            entry = history.get(pid) if isinstance(history, dict) else None
            if isinstance(entry, dict):
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    msgs = [m for m in status.get("messages", []) if isinstance(m, list) and m and m[0] == "execution_error"]
                    detail = msgs[0][1].get("exception_message", "") if msgs and isinstance(msgs[0][1], dict) else ""
                    raise RemoteError(f"{url}: the graph failed ({detail or 'execution_error'})")
                if status.get("completed", True):
                    break
            if time.monotonic() > deadline:
                raise RemoteError(f"{url}: prompt {pid} did not finish within timeout_s={p.timeout_s}")
            time.sleep(p.poll_s)
        try:
            ref = entry["outputs"][self.output_node]["images"][0]
            query = {"filename": str(ref["filename"]), "subfolder": str(ref.get("subfolder", "")), "type": str(ref.get("type", "output"))}
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{url}: the history of prompt {pid} has no image from node {self.output_node}") from None
        raw, headers = self.client.request("GET", "/view", params=query, raw=True, max_bytes=self._image_cap())
        with self._lock:
            self.stats.nfe += t // k
        return [row], self._decode_bytes(raw, "GET /view", headers.get("content-type", ""))[None]

    def _variations(self, x, t, k, seeds, captions, clip):
        """``[B, n, C, H, W]`` from the endpoint. Its images are 8-bit PNGs, already within
        [-1, 1]: ``clip`` changes nothing (``bounded_variations``)."""
        B, n = len(seeds), len(seeds[0])
        xc = x.detach().to("cpu", torch.float32)
        if self.params.protocol == "audit":
            jobs = [(self._send_audit, rows, body) for rows, body in self._jobs_audit(xc, t, k, seeds, captions)]
        elif self.params.protocol == "a1111":
            strength, steps = self.a1111_steps(t, k)  # the same for every variation
            jobs = [
                (self._send_a1111, i * n + j, xc[i], t, k, seeds[i][j], captions[i], strength, steps)
                for i in range(B) for j in range(n)
            ]
        else:  # one request (chain) per variation
            send = self._send_hf if self.params.protocol == "hf" else self._send_comfyui
            jobs = [(send, i * n + j, xc[i], t, k, seeds[i][j], captions[i]) for i in range(B) for j in range(n)]
        out = self._run_jobs(jobs, B * n)
        return out.reshape(B, n, *out.shape[1:]).to(x.device)
