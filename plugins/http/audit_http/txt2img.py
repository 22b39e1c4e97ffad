"""Text-to-image over HTTP, AUTOMATIC1111 style (``POST /sdapi/v1/txt2img``), both ways:

- :class:`A1111Generator` (``--generator a1111`` of ``audit reference build``): a client of a
  Stable Diffusion web UI, or of anything else that speaks its txt2img API. One request per image:
  ``{prompt, negative_prompt, seed, steps, cfg_scale, width, height, sampler_name, batch_size: 1}``
  -> ``{"images": [base64 PNG], ...}``. The seed is sent modulo ``2**seed_bits`` (A1111 seeds are
  32-bit). The identity includes the server's ``sd_model_checkpoint`` (``GET /sdapi/v1/options``),
  so a model swapped behind the URL does not reuse cached images.
- :func:`mount_txt2img`: the same two endpoints on a FastAPI app, served by any registered
  generator (``audit serve ... --txt2img diffusers``), so the client is tested against a real
  server on loopback. Image j of a request uses seed ``seed + j``, as in A1111.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from typing import Any

from pydantic import Field

from audit_core import secrets, Generator, GeneratorParams

from .client import Client, RemoteError, RetryPolicy


class A1111Params(GeneratorParams):
    url: str = Field(description="base URL of the server, e.g. http://127.0.0.1:7860")
    token_env: str | None = Field(None, description="environment variable holding a bearer token")
    steps: int = Field(30, ge=1)
    cfg_scale: float = Field(7.0, ge=0.0)
    width: int = Field(512, ge=8)
    height: int = Field(512, ge=8)
    sampler_name: str = Field("DDIM")
    negative_prompt: str = Field("")
    options: dict[str, Any] = Field(default_factory=dict, description="more txt2img fields, sent with every request")
    seed_bits: int = Field(32, ge=1, le=63, description="seeds are sent modulo 2**bits")
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(3, ge=0)


class A1111Generator(Generator):
    name = "a1111"
    Params = A1111Params

    def __init__(self, params: A1111Params, device: str = "auto"):
        super().__init__(params, device)
        token = secrets.from_env(params.token_env, "--param token_env") if params.token_env else None
        self.client = Client(params.url, token, params.timeout_s, RetryPolicy(max_retries=params.max_retries), 1, token_env=params.token_env)
        options = self.client.request("GET", "/sdapi/v1/options")
        if not isinstance(options, dict):
            raise RemoteError(f"{params.url}/sdapi/v1/options did not return an object: not an AUTOMATIC1111-style server")
        self.checkpoint = str(options.get("sd_model_checkpoint") or "unknown")
        self.checkpoint_hash = str(options.get("sd_checkpoint_hash") or "")

    def identity(self) -> str:
        p = self.params.model_dump(mode="json", exclude={"token_env", "timeout_s", "max_retries"})
        return f"a1111:{self.checkpoint}:{self.checkpoint_hash}:{json.dumps(p, sort_keys=True)}"

    def describe(self) -> str:
        return f"a1111:{self.checkpoint} at {self.params.url} ({self.params.steps} steps, cfg {self.params.cfg_scale:g})"

    def generate(self, prompts, seeds):
        from PIL import Image

        p = self.params
        out = []
        for prompt, seed in zip(prompts, seeds):
            body = {
                "prompt": prompt, "negative_prompt": p.negative_prompt, "seed": int(seed) % (2**p.seed_bits),
                "steps": p.steps, "cfg_scale": p.cfg_scale, "width": p.width, "height": p.height,
                "sampler_name": p.sampler_name, "batch_size": 1, "n_iter": 1, **p.options,
            }
            answer = self.client.request("POST", "/sdapi/v1/txt2img", json=body)
            try:
                data = answer["images"][0]
                img = Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[-1], validate=True)))
                img.load()
            except Exception as exc:  # noqa: BLE001 - any malformed answer is the server's
                raise RemoteError(f"{p.url}/sdapi/v1/txt2img returned no decodable image: {exc}") from None
            out.append(img.convert("RGB"))
        return out

    def close(self) -> None:
        self.client.close()


def mount_txt2img(api: Any, generator: Generator, checkpoint: str | None = None) -> None:
    """Add ``GET /sdapi/v1/options`` and ``POST /sdapi/v1/txt2img`` to the FastAPI app ``api``,
    served by ``generator`` (one request at a time)."""
    from fastapi.responses import JSONResponse

    name = checkpoint or generator.describe()
    lock = asyncio.Lock()

    @api.get("/sdapi/v1/options")
    async def options() -> dict[str, Any]:
        return {"sd_model_checkpoint": name, "sd_checkpoint_hash": hashlib.sha256(generator.identity().encode()).hexdigest()[:10]}

    @api.post("/sdapi/v1/txt2img")
    async def txt2img(body: dict[str, Any]) -> JSONResponse:
        try:
            prompt = str(body.get("prompt", ""))
            seed = int(body.get("seed", -1))
            count = int(body.get("n_iter", 1)) * int(body.get("batch_size", 1))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"detail": f"bad field: {exc}"}, status_code=422)
        if seed < 0 or not 1 <= count <= 16:
            return JSONResponse({"detail": "this server needs an explicit seed >= 0 and 1..16 images"}, status_code=422)
        seeds = [seed + j for j in range(count)]
        async with lock:
            images = await asyncio.get_running_loop().run_in_executor(None, generator.generate, [prompt] * count, seeds)
        encoded = []
        for img in images:
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            encoded.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        info = {"prompt": prompt, "seed": seed, "all_seeds": seeds}
        return JSONResponse({"images": encoded, "parameters": body, "info": json.dumps(info)})


def serve_generator(app: Any, name: str, model: str | None, device: str = "auto") -> Generator:
    """Build the registered generator ``name`` (its ``model`` param: the served folder) and mount
    it on ``app`` (an ``audit serve`` app; its FastAPI app when wrapped in the token guard)."""
    from audit_core import build_plugin

    generator = build_plugin("generators", name, {} if model is None else {"model": model}, device, where="--generator")
    mount_txt2img(getattr(app, "app", app), generator)
    return generator
