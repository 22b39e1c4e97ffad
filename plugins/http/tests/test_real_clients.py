"""``audit serve --protocol hf|a1111`` against the real clients of those APIs, and the ``http``
target's ``hf`` and ``a1111`` modes against the same servers:

- ``huggingface_hub.InferenceClient(model=<loopback URL>).image_to_image(...)`` (JSON with
  ``parameters``, and the raw-bytes form it uses without parameters);
- ``webuiapi.WebUIApi(...).img2img(...)``, and the http target's a1111 body compared with
  webuiapi's field by field (same names, same types).

The served model is the toy target (RGB 8x8, T=1000), so every answer is checked against the
target's own ``variation`` in-process (to 8-bit rounding)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import torch
from starlette.requests import Request  # module level: FastAPI resolves the capture app's annotations here

from audit_core.testing import ToyParams, ToyTarget
from audit_http.client import RemoteError
from audit_http.server import Limits, Service, create_app
from audit_http.target import HTTPParams, HTTPTarget

TOKEN = "real-clients-Tk-93be0f"
QUANT = 1 / 127.5 + 1e-6  # one 8-bit step


def toy() -> ToyTarget:
    return ToyTarget(ToyParams(channels=3, image_size=8))


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float() / 127.5 - 1


def pil(x: torch.Tensor):
    from PIL import Image

    from audit_core.data import tensor_to_uint8

    return Image.fromarray(tensor_to_uint8(x))


def png(x: torch.Tensor) -> bytes:
    """The image as PNG bytes (what InferenceClient takes: bytes, a path or a URL)."""
    from audit_core.data import png_b64

    return base64.b64decode(png_b64(x))


def tensor(img) -> torch.Tensor:
    from audit_core.data import to_tensor

    return to_tensor(img, 3, 8)[0]


def serve_protocol(served, protocol: str, token: str | None = TOKEN) -> str:
    return served(create_app(Service(toy(), "toy", Limits()), token, protocol))


# ----------------------------------------------------------------------------- Hugging Face
def test_inference_client_image_to_image(served):
    hub = pytest.importorskip("huggingface_hub", reason="the hf test uses huggingface_hub's InferenceClient")
    url = serve_protocol(served, "hf")
    client = hub.InferenceClient(model=url, token=TOKEN)
    x = images(2, seed=3)
    # strength 0.2 of T=1000: t=200; int(0.2 * 10) = 2 steps run, so k=100
    out = client.image_to_image(png(x[0]), strength=0.2, num_inference_steps=10, seed=5)
    ref = toy().variation(x[:1], 200, 100, [[5]], clip=True)[0, 0]
    assert out.size == (8, 8) and (tensor(out) - ref).abs().max() <= QUANT
    # the same seed again: the same image (the seed reached the model)
    again = client.image_to_image(png(x[0]), strength=0.2, num_inference_steps=10, seed=5)
    assert (tensor(again) - tensor(out)).abs().max() == 0
    # t and k exactly, through **kwargs
    exact = client.image_to_image(png(x[1]), t=300, k=100, seed=2**40)
    assert (tensor(exact) - toy().variation(x[1:], 300, 100, [[2**40]], clip=True)[0, 0]).abs().max() <= QUANT
    # no parameters: InferenceClient sends the image's bytes; diffusers' defaults apply (0.8, 50 steps)
    bare = client.image_to_image(png(x[0]))
    assert bare.size == (8, 8)


def test_inference_client_errors_are_the_servers_reasons(served):
    hub = pytest.importorskip("huggingface_hub")
    url = serve_protocol(served, "hf")
    with pytest.raises(Exception, match="401"):
        hub.InferenceClient(model=url, token="wrong").image_to_image(png(images(1)[0]), strength=0.2, num_inference_steps=10)
    with pytest.raises(Exception, match="strenght"):  # a misspelt parameter is refused, not defaulted
        hub.InferenceClient(model=url, token=TOKEN).image_to_image(png(images(1)[0]), strenght=0.2)
    with pytest.raises(Exception, match="does not divide"):
        hub.InferenceClient(model=url, token=TOKEN).image_to_image(png(images(1)[0]), strength=0.2, num_inference_steps=15)


def test_http_target_hf_mode(served, monkeypatch):
    url = serve_protocol(served, "hf")
    monkeypatch.setenv("HF_TEST_TOKEN", TOKEN)
    tg = HTTPTarget(HTTPParams(url=url, protocol="hf", image_size=8, token_env="HF_TEST_TOKEN", concurrency=3))
    assert (tg.channels, tg.num_train_timesteps, tg.kind) == (3, 1000, "latent")
    x = images(3, seed=1)
    seeds = [[3, 4], [2**40 + 7, 9], [11, 12]]
    out = tg.variation(x, 290, 10, seeds)  # int(0.29 * 100) == 28: total_steps must be 101
    ref = toy().variation(x, 290, 10, [[s % 2**32 for s in row] for row in seeds], clip=True)
    assert (out - ref).abs().max() <= QUANT
    d = tg.describe()
    assert d["seeds"].startswith("honoured") and d["requests"] == 6 and tg.stats.nfe == 6 * 29
    assert TOKEN not in json.dumps(d) and TOKEN not in tg.identity()
    tg.close()


def test_hf_mapping_without_a_seed_warns_and_says_so(served, monkeypatch, capsys):
    url = serve_protocol(served, "hf", token=None)
    tg = HTTPTarget(HTTPParams(url=url, protocol="hf", image_size=8,
                               hf_parameters={"t": "{t}", "k": "{k}"}))
    assert "not reproducible" in capsys.readouterr().err
    assert any("cannot take a seed" in n and "query cache" in n for n in tg.stats.notes)
    out = tg.variation(images(1), 200, 100, [[1], ])
    assert out.shape == (1, 1, 3, 8, 8) and tg.describe()["seeds"].startswith("not honoured")
    tg.close()


def test_hf_mapping_is_checked():
    from audit_core.base.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\{strenght\}"):
        HTTPTarget(HTTPParams(url="http://127.0.0.1:9", protocol="hf", image_size=8, hf_parameters={"strength": "{strenght}"}))
    with pytest.raises(ConfigError, match="image_size"):
        HTTPTarget(HTTPParams(url="http://127.0.0.1:9", protocol="hf"))


def test_hf_refusals_name_the_url(served):
    url = serve_protocol(served, "hf", token=None)
    tg = HTTPTarget(HTTPParams(url=url, protocol="hf", image_size=8, hf_parameters={"strength": "{strength}", "guidance_scale": 7.5}))
    with pytest.raises(RemoteError, match="guidance"):
        tg.variation(images(1), 200, 100, [[1]])
    tg.close()


# ----------------------------------------------------------------------------- AUTOMATIC1111
def test_webuiapi_img2img(served):
    webuiapi = pytest.importorskip("webuiapi", reason="the a1111 test uses webuiapi, the A1111 API's Python client")
    url = serve_protocol(served, "a1111")
    api = webuiapi.WebUIApi(baseurl=url + "/sdapi/v1", sampler="DDIM", steps=10)
    api.session.headers["Authorization"] = f"Bearer {TOKEN}"
    x = images(1, seed=4)
    r = api.img2img(images=[pil(x[0])], denoising_strength=0.2, seed=7, eta=0, width=8, height=8, batch_size=2, cfg_scale=7.0)
    assert len(r.images) == 2 and r.info["all_seeds"] == [7, 8]  # image j: seed + j, as in A1111
    ref = toy().variation(x.expand(2, -1, -1, -1), 200, 100, [[7], [8]], clip=True)[:, 0]
    for j in range(2):
        assert (tensor(r.images[j]) - ref[j]).abs().max() <= QUANT
    # webuiapi's own defaults (Euler a, eta 1) would not be plain DDIM: refused, saying what to send
    defaults = webuiapi.WebUIApi(baseurl=url + "/sdapi/v1")
    defaults.session.headers["Authorization"] = f"Bearer {TOKEN}"
    with pytest.raises(RuntimeError, match="DDIM"):
        defaults.img2img(images=[pil(x[0])], denoising_strength=0.2, width=8, height=8)
    with pytest.raises(RuntimeError, match="eta"):
        defaults.img2img(images=[pil(x[0])], denoising_strength=0.2, width=8, height=8, sampler_name="DDIM")


def test_http_target_a1111_mode_against_audit_serve(served):
    url = serve_protocol(served, "a1111", token=None)
    tg = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8, concurrency=2))
    x = images(2, seed=6)
    out = tg.variation(x, 200, 50, [[5, 6], [7, 8]])
    assert (out - toy().variation(x, 200, 50, [[5, 6], [7, 8]], clip=True)).abs().max() <= QUANT
    d = tg.describe()
    assert d["seeds"].startswith("honoured") and d["server"]["model"] == "toy"
    tg.close()


def _shape(value: Any) -> Any:
    """A JSON value's type, with the element types of lists and the key types of objects."""
    if isinstance(value, list):
        return ["list", sorted({json.dumps(_shape(v)) for v in value})]
    if isinstance(value, dict):
        return ["dict", {k: _shape(v) for k, v in value.items()}]
    return type(value).__name__


def test_the_targets_a1111_body_is_webuiapis_field_by_field(served):
    webuiapi = pytest.importorskip("webuiapi")
    from fastapi import FastAPI

    bodies: list[dict] = []
    app = FastAPI()

    @app.get("/sdapi/v1/options")
    async def options() -> dict:
        return {"sd_model_checkpoint": "capture"}

    @app.post("/sdapi/v1/img2img")
    async def img2img(request: Request) -> dict:
        body = await request.json()
        bodies.append(body)
        info = {"seed": body["seed"], "all_seeds": [body["seed"]]}
        return {"images": [body["init_images"][0].split(",", 1)[1]], "parameters": {}, "info": json.dumps(info)}

    url = served(app)
    x = images(1, seed=9)
    webuiapi.WebUIApi(baseurl=url + "/sdapi/v1", sampler="DDIM").img2img(
        images=[pil(x[0])], denoising_strength=0.2, steps=10, seed=123, width=8, height=8, prompt="a cat",
    )
    tg = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8))
    tg.variation(x, 200, 100, [[123]], ["a cat"])
    tg.close()
    theirs, ours = bodies
    assert sorted(ours) == sorted(theirs), (set(ours) ^ set(theirs))
    for key in theirs:
        if key == "eta":  # webuiapi's default eta=1.0 (ancestral noise); an audit sends 0.0: same type
            assert (ours[key], type(ours[key])) == (0.0, type(theirs[key]))
            continue
        assert _shape(ours[key]) == _shape(theirs[key]), key
    # and the values that define the variation agree
    for key in ("denoising_strength", "steps", "seed", "width", "height", "prompt", "sampler_name", "batch_size", "n_iter"):
        assert ours[key] == theirs[key], key
    assert ours["init_images"][0].startswith("data:image/png;base64,") and theirs["init_images"][0].startswith("data:image/png;base64,")
    decoded = [tensor(__import__("PIL.Image", fromlist=["Image"]).open(io.BytesIO(base64.b64decode(b["init_images"][0].split(",", 1)[1]))))
               for b in (ours, theirs)]
    assert torch.equal(decoded[0], decoded[1])  # the same image, pixel for pixel


def test_an_unknown_serve_protocol_exits_2_before_loading_a_model(audit_cli):
    code, output = audit_cli("serve", "--target", "ddim", "--model", "/nonexistent", "--protocol", "grpc")
    assert code == 2 and "--protocol 'grpc'" in output and "audit, hf, a1111" in output
