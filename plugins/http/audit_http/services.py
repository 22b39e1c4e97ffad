"""``audit serve --protocol hf|a1111``: the served target behind the APIs that real clients
speak, so that ``huggingface_hub.InferenceClient`` and ``webuiapi`` can query it (and the ``http``
target's ``hf`` and ``a1111`` modes are tested against the same server those clients use).

Both run through the :class:`~audit_http.server.Service` of ``audit serve``: the same token
guard, body limits, single model thread, queue and disconnect handling. A request becomes a
:class:`~audit_http.server.Plan` (images as checked PNG bytes, t, k, seeds) like an
``audit-variation/1`` one; only the translation differs.

**hf** (Hugging Face Inference API task ``image-to-image``): ``POST /`` with either the image's
bytes (``Content-Type: image/...``) or ``{"inputs": <base64 image>, "parameters": {...}}``, and
the answer is the image's PNG bytes (``x-seed``: the seed used). The task has no standard seed or
strength; this server takes diffusers' img2img names:

- ``strength`` (0 < s < 1, default 0.8) and ``num_inference_steps`` (default 50): t =
  round(strength * T), and ``int(min(strength, 0.999) * num_inference_steps)`` steps run, so
  k = t / that (it must divide t); or ``t`` and ``k`` exactly;
- ``seed`` (0 <= seed < 2**63; absent: a random one, reported in ``x-seed``);
- ``prompt`` (a caption, for text-conditioned targets); ``negative_prompt`` and
  ``guidance_scale`` only when empty/None (the served target has neither); ``target_size`` only as
  the model's own size. Anything else is a 400: a misspelt parameter must not run with a default.

**a1111** (the AUTOMATIC1111 web UI API): ``GET /sdapi/v1/options``, ``GET /sdapi/v1/scripts``,
``GET /sdapi/v1/samplers`` and ``POST /sdapi/v1/img2img``. As in A1111, ``int(min(strength,
0.999) * steps)`` steps run from t = round(denoising_strength * T) and image j of the ``n_iter *
batch_size`` outputs uses ``init_images[j % len]`` and seed ``seed + j`` (-1: random). The server
runs deterministic DDIM: ``sampler_name`` must be DDIM, ``eta`` 0, and fields that would change
the output (masks, subseeds, face restoration, tiling, scripts, a resize) must keep their
defaults; ``cfg_scale`` is accepted and not used (the served target's own guidance applies).
"""

from __future__ import annotations

import asyncio
import binascii
import json
import math
import secrets as _pysecrets
from typing import Any

from .protocol import SEED_LIMIT
from .server import BadRequest, Plan, Service, image_payload, png_payload

try:  # module level: FastAPI resolves the endpoint annotations from here
    from starlette.requests import Request
except ImportError:  # pragma: no cover
    Request = Any  # type: ignore[misc,assignment]

HF_DEFAULTS = {"strength": 0.8, "num_inference_steps": 50}  # diffusers' img2img defaults


def steps_to_tk(strength: Any, steps: Any, T: int, what: tuple[str, str]) -> tuple[int, int]:
    """(t, k) of an img2img request: ``int(min(strength, 0.999) * steps)`` steps from t =
    round(strength * T). ``what`` names the two fields in errors."""
    s_name, n_name = what
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength < 1 or not math.isfinite(strength):
        raise BadRequest(f"`{s_name}` must be a number with 0 < {s_name} < 1, got {strength!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise BadRequest(f"`{n_name}` must be a positive integer, got {steps!r}")
    t = round(strength * T)
    run = int(min(strength, 0.999) * steps)
    if not 0 < t < T or run < 1:
        raise BadRequest(f"{s_name}={strength} with {n_name}={steps} runs {run} steps from t={t}; nothing to do")
    if t % run:
        raise BadRequest(
            f"{s_name}={strength} with {n_name}={steps} runs {run} DDIM steps from t={t}, which {run} does not divide; "
            f"pick {n_name} so that int({s_name} * {n_name}) divides {t}"
        )
    return t, t // run


def seed_of(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise BadRequest(f"`{where}` must be an integer 0 <= seed < 2**63, got {value!r}")
    return value


async def run_plan(service: Service, request: Request, plan: Plan) -> Any:
    """Queue a plan for the model exactly as ``POST /v1/variations`` does -> ``[B, n, C, S, S]``,
    or a JSONResponse (busy, client gone)."""
    from fastapi.responses import JSONResponse

    async with service.turn:  # arrival order
        if await request.is_disconnected():
            service.skipped += 1
            return JSONResponse({"error": "the client disconnected"}, status_code=499)
        out, _, _ = await asyncio.get_running_loop().run_in_executor(service.worker, service.run, plan)
    service.requests += 1
    return out


def _admit(service: Service):
    from fastapi.responses import JSONResponse

    if service.pending >= service.limits.max_queue:
        return JSONResponse({"error": "busy: too many queued requests"}, status_code=503, headers={"Retry-After": "1"})
    return None


def _png(x) -> bytes:
    import base64

    from audit_core import png_b64

    return base64.b64decode(png_b64(x))


# ----------------------------------------------------------------------------- hf
HF_KNOWN = {"strength", "num_inference_steps", "t", "k", "seed", "prompt", "negative_prompt", "guidance_scale", "target_size"}


def hf_plan(service: Service, body: bytes, content_type: str) -> Plan:
    """A Hugging Face image-to-image request -> a one-image, one-variation plan."""
    size, T = int(service.target.image_size), service.T
    if content_type.split(";")[0].strip() == "application/json":
        try:
            req = json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(req, dict) or not isinstance(req.get("inputs"), str):
            raise BadRequest("expected {\"inputs\": <base64 image>, \"parameters\": {...}} or the image's bytes")
        params = req.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest("`parameters` must be an object")
        unknown = sorted(set(params) - HF_KNOWN)
        if unknown:
            raise BadRequest(f"unknown parameter `{unknown[0]}`; this endpoint takes {', '.join(sorted(HF_KNOWN))}")
        png = png_payload(req["inputs"], size, "inputs")
    else:
        params = {}
        png = image_payload(body, size, "the body")
    for name in ("negative_prompt", "guidance_scale"):
        if params.get(name) not in (None, ""):
            raise BadRequest(f"`{name}`: the served model has no {name.replace('_', ' ')}; leave it unset")
    ts = params.get("target_size")
    if ts is not None and (not isinstance(ts, dict) or (ts.get("width"), ts.get("height")) != (size, size)):
        raise BadRequest(f"`target_size`: this model makes {size}x{size} images and never resizes")
    if "t" in params or "k" in params:
        t, k = params.get("t"), params.get("k")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (t, k)):
            raise BadRequest("`t` and `k` go together, as integers")
        if "strength" in params or "num_inference_steps" in params:
            raise BadRequest("give either t and k, or strength and num_inference_steps")
        from audit_core import ddim

        if problem := ddim.tk_problem(t, k, T):
            raise BadRequest(f"`t`/`k`: {problem}")
    else:
        t, k = steps_to_tk(
            params.get("strength", HF_DEFAULTS["strength"]), params.get("num_inference_steps", HF_DEFAULTS["num_inference_steps"]),
            T, ("strength", "num_inference_steps"),
        )
    seed = seed_of(params["seed"], "parameters.seed") if params.get("seed") is not None else _pysecrets.randbits(63)
    prompt = params.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadRequest("`prompt` must be a string")
    return Plan(pngs=[png], t=t, k=k, n=1, seeds=[[seed]], captions=[prompt])


def mount_hf(api: Any, service: Service) -> None:
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    @api.post("/", summary="Hugging Face image-to-image: {inputs, parameters} or image bytes -> PNG bytes")
    async def image_to_image(request: Request) -> Any:
        if (busy := _admit(service)) is not None:
            return busy
        service.pending += 1
        try:
            body = b"".join([chunk async for chunk in request.stream()])
            plan = await run_in_threadpool(hf_plan, service, body, request.headers.get("content-type", ""))
            seed = plan.seeds[0][0]
            out = await run_plan(service, request, plan)
            if not hasattr(out, "shape"):
                return out
            png = await run_in_threadpool(_png, out[0, 0])
        finally:
            service.pending -= 1
        return Response(png, media_type="image/png", headers={"x-seed": str(seed)})


# ----------------------------------------------------------------------------- a1111
#: img2img fields that must keep A1111's defaults here: each would change the output of a real
#: A1111 server in a way this DDIM server does not reproduce
A1111_FIXED = {
    "subseed_strength": (0, 0.0), "restore_faces": (False, None), "tiling": (False, None), "mask": (None,),
    "initial_noise_multiplier": (1, 1.0, None), "s_churn": (0, 0.0, None), "s_noise": (1, 1.0, None),
    "script_name": (None, ""), "seed_resize_from_h": (0, -1, None), "seed_resize_from_w": (0, -1, None),
    "override_settings": ({}, None), "negative_prompt": ("", None), "styles": ([], None),
}


def a1111_plan(service: Service, body: dict[str, Any]) -> tuple[Plan, int, dict[str, Any]]:
    """An img2img request -> (plan, first seed, the fields echoed as ``parameters``)."""
    size, T = int(service.target.image_size), service.T
    inits = body.get("init_images")
    if not isinstance(inits, list) or not inits or not all(isinstance(i, str) for i in inits):
        raise BadRequest("`init_images` must be a non-empty list of base64 images")
    for name, allowed in A1111_FIXED.items():
        if name in body and body[name] not in allowed:
            raise BadRequest(f"`{name}`={body[name]!r}: this server runs plain DDIM img2img and cannot honour it")
    if body.get("alwayson_scripts") not in (None, {}) or body.get("script_args") not in (None, []):
        raise BadRequest("scripts are not supported here")
    sampler = body.get("sampler_name") or body.get("sampler_index") or "DDIM"
    if str(sampler).lower() != "ddim":
        raise BadRequest(f"`sampler_name`={sampler!r}: this server runs DDIM only; send sampler_name: DDIM")
    eta = body.get("eta")
    if eta not in (None, 0, 0.0):
        raise BadRequest(f"`eta`={eta!r}: this server runs deterministic DDIM (eta 0); send eta: 0")
    for name in ("width", "height"):
        if name in body and body[name] != size:
            raise BadRequest(f"`{name}`={body[name]!r}: this model makes {size}x{size} images and never resizes")
    t, k = steps_to_tk(body.get("denoising_strength", 0.75), body.get("steps", 50), T, ("denoising_strength", "steps"))
    n_iter, batch = body.get("n_iter", 1), body.get("batch_size", 1)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (n_iter, batch)) or n_iter * batch > service.limits.max_batch:
        raise BadRequest(f"`n_iter` x `batch_size` must be 1..{service.limits.max_batch} images")
    count = n_iter * batch
    seed = body.get("seed", -1)
    if seed in (-1, None):
        seed = _pysecrets.randbits(32)
    seed = seed_of(seed, "seed")
    if seed + count > SEED_LIMIT:
        raise BadRequest("`seed` + the number of images must stay below 2**63")
    pngs = [png_payload(inits[j % len(inits)], size, f"init_images[{j % len(inits)}]") for j in range(count)]
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise BadRequest("`prompt` must be a string")
    plan = Plan(pngs=pngs, t=t, k=k, n=1, seeds=[[seed + j] for j in range(count)], captions=[prompt or None] * count)
    return plan, seed, {key: v for key, v in body.items() if key != "init_images"}


def mount_a1111(api: Any, service: Service) -> None:
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    @api.get("/sdapi/v1/options")
    async def options() -> dict[str, Any]:
        return {"sd_model_checkpoint": service.model or service.target.name, "sd_checkpoint_hash": service.model_id[:10],
                "img2img_fix_steps": False}

    @api.get("/sdapi/v1/scripts")
    async def scripts() -> dict[str, Any]:
        return {"txt2img": [], "img2img": []}

    @api.get("/sdapi/v1/samplers")
    async def samplers() -> list[dict[str, Any]]:
        return [{"name": "DDIM", "aliases": ["ddim"], "options": {}}]

    @api.post("/sdapi/v1/img2img")
    async def img2img(request: Request) -> Any:
        if (busy := _admit(service)) is not None:
            return busy
        service.pending += 1
        try:
            raw = b"".join([chunk async for chunk in request.stream()])
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError, binascii.Error):
                raise BadRequest("the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            plan, seed, echoed = await run_in_threadpool(a1111_plan, service, body)
            seeds = [row[0] for row in plan.seeds]
            out = await run_plan(service, request, plan)
            if not hasattr(out, "shape"):
                return out
            from audit_core import png_b64

            images = await run_in_threadpool(lambda: [png_b64(out[j, 0]) for j in range(out.shape[0])])
        finally:
            service.pending -= 1
        info = {"prompt": echoed.get("prompt", ""), "seed": seed, "all_seeds": seeds, "subseed": -1,
                "steps": echoed.get("steps"), "denoising_strength": echoed.get("denoising_strength"),
                "sampler_name": "DDIM", "sd_model_name": service.model, "sd_model_hash": service.model_id[:10]}
        return JSONResponse({"images": images, "parameters": echoed, "info": json.dumps(info)})


def mount(api: Any, service: Service, protocol: str) -> None:
    """Add ``protocol``'s endpoints to the ``audit serve`` FastAPI app."""
    {"hf": mount_hf, "a1111": mount_a1111}[protocol](api, service)
