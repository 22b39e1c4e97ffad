"""A real Gradio image-to-image app over any installed target, as a Hugging Face Space would
wrap a diffusion model: ``img2img(image, strength, num_inference_steps, seed) -> image``.

    python plugins/gradio/tests/gradio_app.py --target ddim --model builtin:digits-ddpm --port 7860

Like diffusers' img2img pipelines (and A1111), ``int(min(strength, 0.999) * num_inference_steps)``
DDIM steps run from t = round(strength * T); here they are the target's own variation
``V(x, t, k = t / steps_run, seed)``, so the app's answers can be compared with the target
in-process. Images travel as 8-bit PNG (``format="png"``: Gradio's default WebP would be lossy).
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any


def build_app(target: Any) -> Any:
    """The ``gr.Interface`` serving ``target`` at ``api_name="/img2img"``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    import torch
    from PIL import Image

    from audit_core.data import tensor_to_uint8, to_tensor
    from audit_http.services import steps_to_tk

    T = int(target.num_train_timesteps)
    mode = "L" if target.channels == 1 else "RGB"

    def img2img(image: Image.Image, strength: float, num_inference_steps: float, seed: float) -> Image.Image:
        if image is None:
            raise gr.Error("no image")
        if image.size != (target.image_size, target.image_size):
            raise gr.Error(f"the image is {image.size[0]}x{image.size[1]}; this model takes {target.image_size}x{target.image_size}")
        try:
            t, k = steps_to_tk(float(strength), int(num_inference_steps), T, ("strength", "num_inference_steps"))
        except Exception as exc:  # noqa: BLE001 - BadRequest: its reason is the user's answer
            raise gr.Error(getattr(exc, "reason", str(exc))) from None
        x, _ = to_tensor(image, target.channels, target.image_size)
        with torch.no_grad():
            out = target.variation(x[None].to(target.device), t, k, [[int(seed)]], clip=True)[0, 0]
        return Image.fromarray(tensor_to_uint8(out))

    return gr.Interface(
        img2img,
        inputs=[
            gr.Image(type="pil", image_mode=mode, label="image"),
            gr.Number(value=0.2, label="strength"),
            gr.Number(value=10, precision=0, label="num_inference_steps"),
            gr.Number(value=0, precision=0, label="seed"),
        ],
        outputs=gr.Image(type="pil", image_mode=mode, format="png", label="variation"),
        api_name="img2img",
        flagging_mode="never",
        title="img2img",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(app: Any, port: int | None = None, block: bool = False) -> str:
    """Serve ``app`` on 127.0.0.1 (a free port unless given) -> its URL."""
    port = port or free_port()
    app.queue(default_concurrency_limit=1)  # one model call at a time, the others wait in Gradio's queue
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=not block, quiet=True, show_error=True,
               share=False)
    return f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    from audit_http.server import build_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="ddim")
    ap.add_argument("--model", default="builtin:digits-ddpm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    target = build_target(args.target, args.model, args.device)
    port = args.port or free_port()
    print(f"gradio app: {args.target} {args.model}; listening on http://127.0.0.1:{port}", flush=True)
    launch(build_app(target), port, block=True)


if __name__ == "__main__":
    main()
