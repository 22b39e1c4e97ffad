"""`audit serve` hardening: no unauthenticated non-loopback bind, port range, strict request
types, bounded JSON nesting, bounded memory per queued request and bytes held at once, and the
OpenAPI schema behind the token."""

from __future__ import annotations

import base64
import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from audit_core.base.errors import ConfigError
from audit_core.testing import ToyParams, ToyTarget, invoke, no_traceback
from audit_http import server as serve

TOKEN = "hardening-token-5c2e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def client():
    svc = serve.Service(ToyTarget(ToyParams()), "toy", serve.Limits(max_batch=4, max_n=4, max_body_bytes=500_000))
    with TestClient(serve.create_app(svc, TOKEN)) as c:
        yield c
    svc.close()


ONE = png(np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize(
    "change, field",
    [({"t": "200"}, "`t`"), ({"t": True}, "`t`"), ({"t": 100.0}, "`t`"), ({"k": "50"}, "`k`"), ({"n": True}, "`n`"),
     ({"n": "2"}, "`n`"), ({"seed": "5"}, "`seed"), ({"seed": True}, "`seed"), ({"images": [1]}, "`images.0`"),
     ({"caption": 5}, "`caption"), ({"t": None, "strength": True}, "`strength`"), ({"t": None, "strength": "0.1"}, "`strength`")],
)
def test_types_are_strict(client, change, field):
    body = {"images": [ONE], "t": 100, "k": 50, **change}
    body = {key: value for key, value in body.items() if value is not None}
    r = client.post("/v1/variations", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b'{"seed": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"])
def test_deeply_nested_json_is_a_400(client, body):
    r = client.post("/v1/variations", headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_the_openapi_schema_needs_the_token(client):
    assert client.get("/openapi.json").status_code == 401
    r = client.get("/openapi.json", headers=AUTH)
    assert r.status_code == 200
    spec = r.json()
    post = spec["paths"]["/v1/variations"]["post"]
    props = post["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"images", "t", "strength", "k", "steps", "n", "seed", "caption"} <= set(props)
    assert "200" in post["responses"] and "400" in post["responses"]
    assert "/" in spec["paths"] and TOKEN not in r.text


def test_bytes_held_at_once_are_capped():
    svc = serve.Service(ToyTarget(ToyParams()), "toy", serve.Limits(max_body_bytes=50_000, max_pending_bytes=2_000))
    with TestClient(serve.create_app(svc), base_url="http://localhost") as c:
        ok = c.post("/v1/variations", json={"images": [ONE], "t": 100, "k": 50})
        assert ok.status_code == 200
        big = c.post("/v1/variations", json={"images": [ONE] * 60, "t": 100, "k": 50})  # ~6 kB: over the budget
        assert big.status_code == 503 and big.headers["retry-after"] == "1"
    svc.close()


def test_a_queued_request_holds_its_pngs_not_decoded_images():
    """Memory of a request waiting for the model: its PNG bytes (about 3/4 of the body), not the
    parsed JSON plus float tensors (the earlier server held ~2.8x the body per queued request)."""
    size = 128
    svc = serve.Service(ToyTarget(ToyParams(image_size=size, channels=3)), "toy", serve.Limits(max_batch=16))
    rng = np.random.default_rng(0)
    imgs = [png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(16)]  # incompressible
    body = ('{"images": ["' + '", "'.join(imgs) + '"], "t": 100, "k": 50, "n": 4}').encode()
    del imgs
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    plan = svc.plan(body)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(plan.pngs) == 16 and plan.seeds and len(plan.seeds[0]) == 4
    assert held - base < 0.8 * len(body)  # what stays while the request is queued
    assert peak - base < 2.0 * len(body)  # while it is validated
    svc.close()


def test_non_loopback_needs_a_token():
    with pytest.raises(ConfigError, match=r"refusing to listen on the non-loopback address 0\.0\.0\.0 without a token"):
        serve.check_bind("0.0.0.0", 8000, None)
    serve.check_bind("0.0.0.0", 8000, "a-token")
    serve.check_bind("127.0.0.1", 8000, None)
    serve.check_bind("::1", 8000, None)
    serve.check_bind("0.0.0.0", 8000, None, insecure_no_auth=True)  # explicit: warns, serves
    code, out = invoke(["serve", "--target", "toy", "--host", "0.0.0.0", "--port", "0"])
    assert code == 2 and "--insecure-no-auth" in out and no_traceback(out)


@pytest.mark.parametrize("port", [70000, -1, 65536])
def test_ports_out_of_range_are_refused(port):
    with pytest.raises(ConfigError, match="a port is 1..65535"):
        serve.check_bind("127.0.0.1", port, None)
    code, out = invoke(["serve", "--target", "toy", "--port", str(port)])
    assert code == 2 and "1..65535" in out and no_traceback(out)


def test_a_16_bit_png_is_read_like_audit_run_reads_it():
    """`audit serve` scales 16-bit greyscale to 8 bits exactly as `audit run` reads a 16-bit
    file (it used to refuse it, so a user's 16-bit data worked locally but not over HTTP)."""
    import torch

    from audit_core.data import to_8bit, to_tensor

    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, format="PNG")
    raw = base64.b64encode(buf.getvalue()).decode()
    got = serve.decode_image(raw, channels=1, size=8, where="images[0]")
    as_file = Image.open(io.BytesIO(buf.getvalue()))
    want, _ = to_tensor(to_8bit(as_file, as_file.format)[0], 1, 8)
    assert torch.equal(got, want)
    eight_bit = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert torch.equal(got, torch.from_numpy(eight_bit.astype(np.float32) / 127.5 - 1.0)[None])
