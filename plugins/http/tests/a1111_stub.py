"""A small AUTOMATIC1111-style server over a real target, for the tests of ``protocol: a1111``.

It speaks the subset of the Stable Diffusion web UI API that image-variation clients use:

- ``GET /sdapi/v1/options`` -> ``sd_model_checkpoint``, ``sd_checkpoint_hash``;
- ``POST /sdapi/v1/img2img`` with ``init_images`` (base64 PNG, ``data:`` prefix allowed),
  ``denoising_strength``, ``steps``, ``seed`` (-1: random), ``prompt``, ``n_iter``,
  ``batch_size`` -> ``{"images": [...], "parameters": {...}, "info": "<json string>"}``.

Like A1111, img2img runs ``int(min(denoising_strength, 0.999) * steps)`` denoising steps (all
``steps`` with ``fix_steps``), from ``t = round(denoising_strength * T)``; image ``j`` of the
``n_iter * batch_size`` outputs uses seed ``seed + j``. Here the target's DDIM variation does the
work: ``V(x, t, k = t / steps_run)``, so results can be checked against the target in-process.
"""

from __future__ import annotations

import json
import random
from typing import Any

import torch

from audit_http import server as serve
from audit_core.data import png_b64

try:  # module level: FastAPI resolves the endpoint annotations from here
    from starlette.requests import Request
except ImportError:  # pragma: no cover
    Request = Any  # type: ignore[misc,assignment]


def a1111_app(target, honour_seeds: bool = True, fix_steps: bool = False, checkpoint: str = "toy.safetensors [c0ffee]"):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    T = target.num_train_timesteps
    state = {"calls": 0}
    app.state.calls = state

    @app.get("/sdapi/v1/options")
    async def options() -> dict[str, Any]:
        return {"sd_model_checkpoint": checkpoint, "sd_checkpoint_hash": "c0ffee1234", "img2img_fix_steps": fix_steps}

    @app.post("/sdapi/v1/img2img")
    def img2img(body: dict[str, Any]) -> JSONResponse:  # sync: FastAPI runs it in a worker thread
        state["calls"] += 1
        try:
            inits = body["init_images"]
            strength = float(body.get("denoising_strength", 0.75))
            steps = int(body.get("steps", 50))
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": "BadRequest", "detail": f"bad field: {exc}"}, status_code=422)
        run_steps = steps if fix_steps else int(min(strength, 0.999) * steps)
        t = round(strength * T)
        if run_steps < 1 or not 0 < t < T or t % run_steps:
            return JSONResponse({"detail": f"cannot run {run_steps} steps from t={t}"}, status_code=422)
        count = int(body.get("n_iter", 1)) * int(body.get("batch_size", 1))
        seed = int(body.get("seed", -1))
        if seed == -1 or not honour_seeds:
            seed = random.randrange(2**32)
        seeds = [seed + j for j in range(count)]
        try:
            x = torch.stack([
                serve.decode_image(inits[j % len(inits)], target.channels, target.image_size, "init_images")
                for j in range(count)
            ])
        except serve.BadRequest as exc:
            return JSONResponse({"detail": exc.reason}, status_code=422)
        prompt = body.get("prompt", "")
        state["cfg_scale"] = body.get("cfg_scale")
        with torch.no_grad():  # each init image once, with its one seed
            out = target.variation(x, t, t // run_steps, [[s] for s in seeds], [prompt] * count, clip=True)[:, 0]
        info = {"prompt": prompt, "seed": seeds[0], "all_seeds": seeds, "steps": steps, "denoising_strength": strength}
        params = {k: v for k, v in body.items() if k != "init_images"}
        return JSONResponse({
            "images": [png_b64(out[j]) for j in range(count)], "parameters": params, "info": json.dumps(info),
        })

    return app
