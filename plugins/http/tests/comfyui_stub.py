"""A loopback server written from ComfyUI's documented HTTP API (ComfyUI itself is not a
registry package), over a real target, for the tests of ``protocol: comfyui``.

Endpoints, as ComfyUI's server documents them (``server.py`` routes; the API-format workflow of
"Save (API Format)"):

- ``POST /upload/image`` (multipart: ``image`` file, ``type``, ``subfolder``, ``overwrite``) ->
  ``{"name", "subfolder", "type"}``; a taken name without ``overwrite`` gets `` (1)``;
- ``POST /prompt`` ``{"prompt": {node_id: {class_type, inputs}}, "client_id"}`` ->
  ``{"prompt_id", "number", "node_errors"}``, or 400 ``{"error": {...}, "node_errors": {...}}``
  for a graph that does not validate; queued prompts run one at a time in a worker thread;
- ``GET /history/{prompt_id}`` -> ``{}`` until it has run, then ``{prompt_id: {"prompt": [...],
  "outputs": {node_id: {"images": [{filename, subfolder, type}]}}, "status": {"status_str",
  "completed", "messages"}}}``;
- ``GET /view?filename=&subfolder=&type=`` -> the image's bytes.

Nodes: ``CheckpointLoaderSimple`` (the one served checkpoint), ``LoadImage``, ``CLIPTextEncode``,
``VAEEncode``/``VAEDecode`` (identities: the served target is a pixel-space model),
``KSampler`` (sampler ``ddim`` only: the target's DDIM variation ``V(x, t = round(denoise * T),
k = t / steps, seed)``, as ComfyUI's KSampler runs the last ``steps`` of ``int(steps / denoise)``
steps) and ``SaveImage``.
"""

from __future__ import annotations

import io
import queue
import threading
import uuid
from typing import Any

import torch

try:  # module level: FastAPI resolves the endpoint annotations from here
    from starlette.requests import Request
except ImportError:  # pragma: no cover
    Request = Any  # type: ignore[misc,assignment]

NODES = {"CheckpointLoaderSimple", "LoadImage", "CLIPTextEncode", "VAEEncode", "VAEDecode", "KSampler", "SaveImage"}


class NodeError(Exception):
    pass


def comfyui_app(target, checkpoint: str = "model.safetensors"):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response
    from PIL import Image

    from audit_core.data import png_b64, to_tensor

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    files: dict[tuple[str, str, str], bytes] = {}  # (type, subfolder, name) -> bytes
    history: dict[str, dict[str, Any]] = {}
    work: queue.Queue = queue.Queue()
    state = {"number": 0, "saved": 0, "prompts": []}
    app.state.comfy = state
    T = int(target.num_train_timesteps)

    def run(graph: dict[str, Any]) -> dict[str, Any]:
        memo: dict[str, tuple] = {}

        def value(v: Any) -> Any:
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):  # a link: [node_id, output index]
                return node(v[0])[v[1]]
            return v

        def node(nid: str) -> tuple:
            if nid in memo:
                return memo[nid]
            spec = graph[nid]
            cls, a = spec["class_type"], {k: value(v) for k, v in spec["inputs"].items()}
            if cls == "CheckpointLoaderSimple":
                out = ("model", "clip", "vae")
            elif cls == "LoadImage":
                raw = files.get(("input", *a["image"].rpartition("/")[::2])) if "/" in a["image"] else files.get(("input", "", a["image"]))
                if raw is None:
                    raise NodeError(f"Invalid image file: {a['image']}")
                x, _ = to_tensor(Image.open(io.BytesIO(raw)), target.channels, target.image_size)
                out = (x, None)
            elif cls == "CLIPTextEncode":
                out = (("cond", a["text"]),)
            elif cls in ("VAEEncode", "VAEDecode"):
                out = (a["pixels"] if cls == "VAEEncode" else a["samples"],)
            elif cls == "KSampler":
                if a["sampler_name"] != "ddim":
                    raise NodeError(f"this server runs the ddim sampler only, not {a['sampler_name']}")
                t, steps = round(float(a["denoise"]) * T), int(a["steps"])
                if not 0 < t < T or steps < 1 or t % steps:
                    raise NodeError(f"denoise {a['denoise']} with {steps} steps: t={t} is not a multiple of the steps")
                text = a["positive"][1] or None
                with torch.no_grad():
                    x = a["latent_image"][None].to(target.device)
                    out = (target.variation(x, t, t // steps, [[int(a["seed"])]], [text], clip=True)[0, 0].cpu(),)
            elif cls == "SaveImage":
                state["saved"] += 1
                name = f"{a.get('filename_prefix', 'ComfyUI')}_{state['saved']:05}_.png"
                import base64

                files[("output", "", name)] = base64.b64decode(png_b64(a["images"]))
                out = ({"images": [{"filename": name, "subfolder": "", "type": "output"}]},)
            else:  # pragma: no cover - validated before queueing
                raise NodeError(f"unknown node {cls}")
            memo[nid] = out
            return out

        return {nid: node(nid)[0] for nid, spec in graph.items() if spec["class_type"] == "SaveImage"}

    def worker() -> None:
        while True:
            pid, graph, number = work.get()
            try:
                outputs, status = run(graph), {"status_str": "success", "completed": True, "messages": [["execution_success", {"prompt_id": pid}]]}
            except Exception as exc:  # noqa: BLE001 - reported in the history, as ComfyUI does
                outputs = {}
                status = {"status_str": "error", "completed": False, "messages": [
                    ["execution_error", {"prompt_id": pid, "exception_message": str(exc), "exception_type": type(exc).__name__}]]}
            history[pid] = {"prompt": [number, pid, graph, {}, list(outputs)], "outputs": outputs, "status": status}

    threading.Thread(target=worker, daemon=True, name="comfyui-stub").start()

    @app.post("/upload/image")
    async def upload(request: Request) -> JSONResponse:
        form = await request.form()
        image = form.get("image")
        if image is None or not hasattr(image, "read"):
            return JSONResponse({"error": "no image"}, status_code=400)
        kind, sub = str(form.get("type", "input")), str(form.get("subfolder", ""))
        name = image.filename or "image.png"
        if form.get("overwrite") not in ("true", "1") and (kind, sub, name) in files:
            stem, dot, ext = name.rpartition(".")
            i = 1
            while (kind, sub, f"{stem} ({i}).{ext}") in files:
                i += 1
            name = f"{stem} ({i}).{ext}"
        files[(kind, sub, name)] = await image.read()
        return JSONResponse({"name": name, "subfolder": sub, "type": kind})

    @app.post("/prompt")
    async def prompt(request: Request) -> JSONResponse:
        body = await request.json()
        graph = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(graph, dict) or not graph:
            return JSONResponse({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "", "extra_info": {}},
                                 "node_errors": {}}, status_code=400)
        errors = {nid: {"errors": [{"type": "invalid", "message": f"unknown node type {spec.get('class_type')}"}],
                        "class_type": spec.get("class_type")}
                  for nid, spec in graph.items() if not isinstance(spec, dict) or spec.get("class_type") not in NODES}
        for nid, spec in graph.items():
            if nid not in errors and spec["class_type"] == "CheckpointLoaderSimple" and spec["inputs"].get("ckpt_name") != checkpoint:
                errors[nid] = {"errors": [{"type": "value_not_in_list", "message": f"ckpt_name not in [{checkpoint!r}]"}],
                               "class_type": spec["class_type"]}
        if errors:
            return JSONResponse({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                                           "details": "", "extra_info": {}}, "node_errors": errors}, status_code=400)
        pid = str(uuid.uuid4())
        state["number"] += 1
        state["prompts"].append(graph)
        work.put((pid, graph, state["number"]))
        return JSONResponse({"prompt_id": pid, "number": state["number"], "node_errors": {}})

    @app.get("/history/{pid}")
    async def get_history(pid: str) -> JSONResponse:
        return JSONResponse({pid: history[pid]} if pid in history else {})

    @app.get("/view")
    async def view(filename: str, subfolder: str = "", type: str = "output") -> Response:  # noqa: A002 - ComfyUI's name
        raw = files.get((type, subfolder, filename))
        if raw is None:
            return Response(status_code=404)
        return Response(raw, media_type="image/png")

    return app


def main(argv: list[str] | None = None) -> None:
    """``python plugins/http/tests/comfyui_stub.py --target ddim --model builtin:digits-ddpm``:
    the stub over an installed target on a free loopback port (prints ``listening on URL``)."""
    import argparse

    import uvicorn

    from audit_http.server import bind, build_target

    ap = argparse.ArgumentParser(description="a ComfyUI-API loopback server over an installed target")
    ap.add_argument("--target", default="ddim")
    ap.add_argument("--model", default="builtin:digits-ddpm")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    target = build_target(args.target, args.model, args.device)
    sock = bind("127.0.0.1", 0)
    print(f"comfyui stub: {args.target} {args.model}; listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(comfyui_app(target), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
