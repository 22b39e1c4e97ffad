"""The `http` target does not trust the server: a bad status (negative channels, a string image
size, a 60000-pixel size), an oversized answer (a "3 GB" Content-Length, or a stream that never
ends), malformed variations and giant returned images each end in a clear error naming the URL,
and `audit run` exits with 2, without a traceback."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
import torch

from audit_core.data import png_b64
from audit_http.client import RemoteError
from audit_http.target import HTTPParams, HTTPTarget

GOOD_STATUS = {"protocol": "audit-variation/1", "model_id": "m", "kind": "pixel", "T": 1000, "image_size": 8, "channels": 1}


def json_app(status: dict, answer=None, headers: list | None = None, chunks: int = 0):
    """A raw ASGI server: ``GET /`` -> ``status``; ``POST`` -> ``answer(body)`` as JSON, or with
    ``chunks`` > 0 an endless-looking stream of ``chunks`` MiB of spaces."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            payload, extra = json.dumps(status).encode(), []
        elif chunks:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            for _ in range(chunks):
                await send({"type": "http.response.body", "body": b" " * (1 << 20), "more_body": True})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        else:
            payload, extra = json.dumps(answer(json.loads(body))).encode(), headers or []
        declared = [(b"content-length", str(len(payload)).encode())] if not any(h[0] == b"content-length" for h in extra) else []
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), *declared, *extra]})
        await send({"type": "http.response.body", "body": payload if not extra else payload[:10]})

    return app


@pytest.mark.parametrize(
    "change, match",
    [({"channels": -1}, "`channels`: Input should be greater than or equal to 1"),
     ({"image_size": "32"}, "`image_size`: Input should be a valid integer"),
     ({"image_size": 60000}, "`image_size`: Input should be less than or equal to 4096"),
     ({"T": 1.5}, "`T`"), ({"kind": "video"}, "`kind`"), ({"limits": {"max_n": 0}}, "`limits.max_n`")],
)
def test_a_bad_status_is_refused_naming_the_url(served, change, match):
    url = served(json_app({**GOOD_STATUS, **change}))
    with pytest.raises(RemoteError, match=match) as info:
        HTTPTarget(HTTPParams(url=url))
    assert url in str(info.value) and "unusable status" in str(info.value)


def echo(body):
    return {"variations": [[img] * body["n"] for img in body["images"]], "seeds": body["seed"], "nfe": 0}


def target_for(served, app) -> HTTPTarget:
    return HTTPTarget(HTTPParams(url=served(app), max_retries=0))


def test_a_declared_3_gb_answer_is_refused_before_reading(served):
    tg = target_for(served, json_app(GOOD_STATUS, echo, headers=[(b"content-length", b"3000000000")]))
    with pytest.raises(RemoteError, match=r"answered with more than \d+ bytes.*refused"):
        tg.variation(torch.zeros(1, 1, 8, 8), 100, 50, [[1]])
    tg.close()


def test_a_streamed_answer_past_the_cap_is_refused(served):
    tg = target_for(served, json_app(GOOD_STATUS, chunks=4))  # 4 MiB for one 8x8 variation
    with pytest.raises(RemoteError, match="answered with more than") as info:
        tg.variation(torch.zeros(1, 1, 8, 8), 100, 50, [[1]])
    assert tg.params.url in str(info.value)
    tg.close()


@pytest.mark.parametrize(
    "answer, match",
    [(lambda b: {"variations": "nope"}, "`variations`"),
     (lambda b: {"variations": [[1]]}, r"`variations\.0\.0`"),
     (lambda b: {"variations": [[img] for img in b["images"]] * 2, "seeds": b["seed"]}, r"returned \[1, 1\] variations per image"),
     (lambda b: {**echo(b), "nfe": -5}, "`nfe`")],
)
def test_malformed_answers_are_refused(served, answer, match):
    tg = target_for(served, json_app(GOOD_STATUS, answer))
    with pytest.raises(RemoteError, match=match):
        tg.variation(torch.zeros(1, 1, 8, 8), 100, 50, [[1]])
    tg.close()


def giant_png_header(width: int, height: int) -> str:
    """A PNG whose header claims ``width`` x ``height`` (its data is a stub: never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    raw += chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


def test_a_60000_pixel_image_is_refused_before_decoding(served):
    big = giant_png_header(60000, 60)  # (60000 x 60000 trips PIL's own bomb guard first: refused too)
    tg = target_for(served, json_app(GOOD_STATUS, lambda b: {**echo(b), "variations": [[big]]}))
    with pytest.raises(RemoteError, match=r"http://127.0.0.1:\d+ returned a 60000x60 variation for a 8x8 model; .*refused"):
        tg.variation(torch.zeros(1, 1, 8, 8), 100, 50, [[1]])
    tg.close()


def test_a_sane_answer_passes(served):
    tg = target_for(served, json_app(GOOD_STATUS, echo))
    x = torch.randint(0, 256, (2, 1, 8, 8)).float() / 127.5 - 1  # 8-bit values round-trip exactly
    assert torch.equal(tg.variation(x, 100, 50, [[1, 2], [3, 4]]), x[:, None].expand(2, 2, 1, 8, 8))
    tg.close()


def test_audit_run_against_a_lying_server_exits_2(served, image_folder, write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_rediffuse")
    url = served(json_app({**GOOD_STATUS, "channels": -3}))
    cfg = {
        "run": {"name": "liar", "seed": 0, "device": "cpu"},
        "target": {"plugin": "http", "url": url},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("nm", n=2, seed=1))},
        "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 1}}],
        "cache": {"enabled": False},
    }
    code, out = audit_cli("run", write_config(cfg), "--output", tmp_path / "run")
    assert code == 2, out
    assert url in out and "`channels`" in out and "Traceback" not in out
    assert png_b64  # the helper the server side uses is importable without FastAPI in the target
