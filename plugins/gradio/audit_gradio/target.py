"""``GradioTarget``: a variation-only (black-box) target behind an image-to-image Gradio app.

Most Hugging Face Spaces are Gradio apps, and any of them that turns an image into a variation of
it (img2img with a strength, a step count and ideally a seed) can be audited with ReDiffuse. The
target calls the app exactly as its users' scripts do::

    Client(url).predict(image, strength, steps, seed, api_name="/img2img")

with one call per variation. What the app's inputs mean is configuration: ``inputs`` lists them
in order (or by name), each a constant or a placeholder of :mod:`audit_http.mapping` (``{image}``
is the variation's input image, sent as a file; ``{strength}`` is t/T; ``{total_steps}`` the
diffusers/A1111 step count; ``{seed}``; ...). ``output`` picks the image among the app's outputs,
``seed_output`` the seed it reports, if any.

What it shares with the ``http`` target (:class:`audit_http.remote.RemoteTarget`): at most
``concurrency`` calls in flight, retries with exponential backoff and jitter on transient failures
(timeouts, dropped connections, a full queue, a cancelled job, 429/5xx; :class:`audit_http.client.Retrier`), the
accounting in ``results.json["target"]`` (requests, retries, time spent waiting, failures by
kind), returned images checked (over 4x the model's size: refused) and the record of whether
seeds reached the model. The core's query cache wraps every call, so a resumed run never pays
twice.

Secrets: ``token_env`` names the variable holding a Hugging Face token (private Spaces), never
the token itself; no locally saved token is ever sent to an app.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from audit_core import secrets
from audit_core import ConfigError
from audit_core import TargetContext, TargetParams
from audit_http import mapping
from audit_http.client import RETRY_STATUS, RemoteError, Retrier, RetryPolicy
from audit_http.remote import RemoteTarget
from audit_http.target import check_url

_SPACE = re.compile(r"^[\w.-]+/[\w.-]+$")


class GradioParams(TargetParams):
    """The ``target:`` mapping of ``plugin: gradio`` (unknown keys are errors)."""

    url: str = Field(description="the app's URL (http://127.0.0.1:7860) or a Hugging Face Space's name (owner/space)")
    api_name: str = Field("/predict", description="the endpoint to call, e.g. /img2img (see the app's 'Use via API' page)")
    inputs: list[Any] | dict[str, Any] = Field(
        description="the app's inputs in order (a list) or by name (a mapping): constants or placeholders "
        "{image} {strength} {total_steps} {steps} {t} {k} {seed} {prompt}"
    )
    output: int | None = Field(None, ge=0, description="which of the app's outputs is the image (None: its only output)")
    seed_output: int | None = Field(None, ge=0, description="which output reports the seed the app used, if any")
    token_env: str | None = Field(None, description="name of the environment variable holding a Hugging Face token (private Spaces)")
    image_size: int = Field(ge=1, le=4096, description="the model's image size (an app cannot report it)")
    channels: int = Field(3, ge=1, le=4)
    num_train_timesteps: int = Field(1000, ge=2, le=1_000_000, description="the model's T")
    kind: Literal["pixel", "latent"] = Field("latent", description="pixel or latent (ReDiffuse's variant)")
    model_id: str | None = Field(None, description="the served model's name or version: part of the cache key")
    prompt: str = Field("", description="{prompt} of rows without a caption")
    seed_bits: int = Field(32, ge=1, le=63, description="seeds are sent modulo 2**bits (Gradio numbers are floats: keep <= 53)")
    concurrency: int = Field(4, ge=1, le=256, description="calls in flight at once")
    timeout_s: float = Field(300.0, gt=0, description="seconds to wait for one call, the app's queue included")
    max_retries: int = Field(5, ge=0, le=100)
    backoff_s: float = Field(0.5, ge=0)
    max_backoff_s: float = Field(30.0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        return v if _SPACE.match(v) else check_url(v)

    @field_validator("api_name")
    @classmethod
    def _api_name(cls, v: str) -> str:
        return v if v.startswith("/") else "/" + v


def transient(exc: BaseException) -> str | None:
    """The reason to retry a failed call, or None when retrying cannot help."""
    from concurrent.futures import CancelledError

    import httpx

    if isinstance(exc, CancelledError):  # gradio_client cancels a job whose event stream broke (a loaded server)
        return "cancelled"
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return f"HTTP {code}" if code in RETRY_STATUS else None
    if isinstance(exc, httpx.TransportError):
        return type(exc).__name__
    if type(exc).__name__ in ("QueueError", "TooManyRequestsError"):  # gradio_client's: the app is busy
        return type(exc).__name__
    return None


class GradioTarget(RemoteTarget):
    name = "gradio"
    kind = "latent"
    Params = GradioParams

    def __init__(self, params: GradioParams, context: TargetContext | None = None):
        super().__init__(params, context)
        p = params
        self.image_size, self.channels = p.image_size, p.channels
        self.num_train_timesteps, self.kind = p.num_train_timesteps, p.kind
        used = mapping.check(p.inputs, "target.inputs")
        if "image" not in used:
            raise ConfigError("target.inputs: no {image}: which of the app's inputs takes the image?")
        policy = RetryPolicy(max_retries=p.max_retries, backoff_s=p.backoff_s, max_backoff_s=p.max_backoff_s)
        self.calls = Retrier(policy, transient)
        self.seeds_checked = p.seed_output is not None
        if "seed" not in used:
            self._no_seed("target.inputs")
        self.tmp = Path(tempfile.mkdtemp(prefix="audit-gradio-"))
        self.client = self._connect()

    def _connect(self) -> Any:
        p = self.params
        # no telemetry (gradio_client reads this variable; its own argument cannot turn it off)
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        from gradio_client import Client

        token = secrets.from_env(p.token_env, "target.token_env") if p.token_env else False  # False: no saved token
        try:
            client = Retrier(self.calls.policy, transient).call(  # not counted among the variation calls
                lambda: Client(
                    p.url, token=token, verbose=False, download_files=str(self.tmp / "out"),
                    httpx_kwargs={"timeout": p.timeout_s}, analytics_enabled=False,
                ),
                f"loading the Gradio app at {p.url}",
            )
        except RemoteError:
            raise
        except Exception as exc:  # noqa: BLE001 - not a Gradio app, a private Space without a token, ...
            raise RemoteError(f"{p.url} is not a reachable Gradio app: {secrets.scrub(str(exc))[:300]}") from None
        finally:
            del token
        named = client.view_api(print_info=False, return_format="dict").get("named_endpoints", {})
        if p.api_name not in named:
            raise ConfigError(f"target.api_name: {p.url} has no endpoint {p.api_name}; it has {', '.join(sorted(named)) or 'none'}")
        expected = len(named[p.api_name].get("parameters", []))
        if isinstance(p.inputs, list) and len(p.inputs) != expected:
            raise ConfigError(f"target.inputs: {p.api_name} takes {expected} inputs; {len(p.inputs)} are given")
        return client

    # ----------------------------------------------------------------- description
    def identity(self) -> str:
        p = self.params
        shape = {"inputs": p.inputs, "output": p.output, "prompt": p.prompt, "bits": p.seed_bits, "T": p.num_train_timesteps}
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"gradio:{p.url}{p.api_name}:{p.model_id}:{digest}"

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {
            **super().describe(), "T": p.num_train_timesteps, "url": p.url, "api_name": p.api_name, "model_id": p.model_id,
            **self.describe_calls(),
        }

    def close(self) -> None:
        super().close()
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - older gradio_client versions have no close()
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ----------------------------------------------------------------- variation
    def _call(self, row: int, x: torch.Tensor, t: int, k: int, seed: int, caption: str | None):
        import base64

        from gradio_client import handle_file

        from audit_core import png_b64

        p = self.params
        path = self.tmp / f"{uuid.uuid4().hex}.png"
        path.write_bytes(base64.b64decode(png_b64(x)))
        vals = mapping.values(t, k, p.num_train_timesteps, seed, p.seed_bits, caption if caption is not None else p.prompt,
                              handle_file(str(path)))
        args = mapping.fill(p.inputs, vals)

        def call() -> Any:
            if isinstance(args, dict):
                job = self.client.submit(api_name=p.api_name, **args)
            else:
                job = self.client.submit(*args, api_name=p.api_name)
            try:
                return job.result(timeout=p.timeout_s)
            except TimeoutError:
                job.cancel()
                raise

        try:
            result = self.calls.call(call, f"{p.url} {p.api_name}")
        except RemoteError:
            raise
        except Exception as exc:  # noqa: BLE001 - the app's own error (gradio_client's AppError, ...)
            raise RemoteError(f"{p.url} {p.api_name} failed: {type(exc).__name__}: {str(exc)[:300]}") from None
        finally:
            path.unlink(missing_ok=True)
        outputs = list(result) if isinstance(result, (list, tuple)) else [result]
        image = outputs[p.output or 0] if p.output is not None or len(outputs) == 1 else None
        if image is None:
            raise ConfigError(f"target.output: {p.api_name} returned {len(outputs)} outputs; say which one is the image")
        if p.seed_output is not None:
            try:
                self._note_seeds(int(outputs[p.seed_output]) == vals["seed"])
            except (IndexError, TypeError, ValueError):
                self._note_seeds(False)
        file = image.get("path") if isinstance(image, dict) else image
        if not isinstance(file, str) or not Path(file).is_file():
            raise RemoteError(f"{p.url} {p.api_name} returned {type(image).__name__}, not an image file (check target.output)")
        try:
            raw = Path(file).read_bytes()
        finally:
            Path(file).unlink(missing_ok=True)
        with self._lock:
            self.stats.nfe += t // k
        return [row], self._decode_bytes(raw, f"{p.api_name}")[None]

    def _variations(self, x, t, k, seeds, captions, clip):
        """``[B, n, C, H, W]``, one app call per variation. The app's images are 8-bit: ``clip``
        changes nothing (``bounded_variations``)."""
        B, n = len(seeds), len(seeds[0])
        xc = x.detach().to("cpu", torch.float32)
        jobs = [(self._call, i * n + j, xc[i], t, k, seeds[i][j], captions[i]) for i in range(B) for j in range(n)]
        out = self._run_jobs(jobs, B * n)
        return out.reshape(B, n, *out.shape[1:]).to(x.device)
