"""The `http` target against a server that misbehaves (issue 34, hangs and smaller), over real
loopback sockets: an answer trickling one byte at a time never timed out (the timeout was per
read), and variations of another size than the model's were silently resized (a protocol
violation: the audit would score images the model did not produce)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from audit_http.client import RemoteError  # noqa: E402
from audit_http.target import HTTPParams, HTTPTarget  # noqa: E402
from audit_http.testing import LoopbackServer  # noqa: E402

STATUS = {"protocol": "audit-variation/1", "model_id": "m", "kind": "pixel", "T": 1000, "image_size": 8, "channels": 1}


def png(size: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def app(post):
    """A raw ASGI server: ``GET /`` -> STATUS; ``POST`` -> ``await post(body, send)``."""

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            payload = json.dumps(STATUS).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
            return
        await post(json.loads(body), send)

    return asgi


@pytest.fixture
def target():
    servers = []

    def make(post, **params) -> HTTPTarget:
        s = LoopbackServer(app(post))
        servers.append(s)
        return HTTPTarget(HTTPParams(url=s.__enter__(), max_retries=0, **params))

    yield make
    for s in servers:
        s.__exit__(None, None, None)


def test_an_answer_trickling_a_byte_at_a_time_times_out(target):
    """Planted bug: the deadline checked per read only (httpx's timeout): a server sending one
    byte every 0.2 s kept the run waiting for as long as it liked (here 40 s; forever in the
    wild). Now the whole answer must arrive within ``timeout_s``."""

    async def trickle(body, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        for _ in range(200):
            await send({"type": "http.response.body", "body": b" ", "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"{}"})

    tg = target(trickle, timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match=r"timed out after 1s"):
        tg.variation(torch.zeros(1, 1, 8, 8), 100, 50, [[1]])
    assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("size", [4, 16, 9])
def test_a_variation_of_another_size_is_refused_not_resized(target, size):
    async def wrong_size(body, send):
        answer = {"variations": [[png(size)] * body["n"] for _ in body["images"]], "seeds": body["seed"], "nfe": 0}
        payload = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    tg = target(wrong_size)
    with pytest.raises(RemoteError, match=rf"returned a {size}x{size} variation for a 8x8 model; .*refused"):
        tg.variation(torch.zeros(1, 1, 8, 8), 100, 50, [[1]])


def test_a_variation_of_the_right_size_and_another_mode_is_converted(target):
    """Converting the mode (an RGB answer for a greyscale model) is not a size change: it is
    kept, with its note."""

    async def rgb(body, send):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
        img = base64.b64encode(buf.getvalue()).decode()
        payload = json.dumps({"variations": [[img] * body["n"] for _ in body["images"]], "seeds": body["seed"], "nfe": 0}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    tg = target(rgb)
    out = tg.variation(torch.zeros(1, 1, 8, 8), 100, 50, [[1]])
    assert out.shape == (1, 1, 1, 8, 8)
    assert any("another mode" in n for n in tg.stats.notes)
