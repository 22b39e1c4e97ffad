"""`audit serve` (audit_http.server) in-process (the ASGI app through Starlette's TestClient): status, auth, the
variations endpoint (exact against the target's own `variation`), seeds, and every 400/401/413.
The subprocess end to end (a real port, the http target, ReDiffuse) is plugins/http/tests."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="audit serve needs the `serve` extra (fastapi, uvicorn)")
from starlette.testclient import TestClient  # noqa: E402

from audit_http import protocol  # noqa: E402
from audit_http import server as serve  # noqa: E402
from audit_core.testing import ToyParams, ToyTarget, invoke, no_traceback  # noqa: E402

TOKEN = "serve-test-token-9d1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def unpng(data: str) -> torch.Tensor:
    arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))), dtype=np.float32)
    return torch.from_numpy(arr / 127.5 - 1.0)[None]


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]


@pytest.fixture
def service():
    svc = serve.Service(ToyTarget(ToyParams()), "toy-model", serve.Limits(max_batch=4, max_n=5, max_body_bytes=20_000))
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    with TestClient(serve.create_app(service, TOKEN)) as c:
        yield c


def test_status_needs_the_token(client):
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": TOKEN}).status_code == 401  # no scheme
    r = client.get("/", headers=AUTH)
    assert r.status_code == 200
    st = r.json()
    assert st["protocol"] == serve.PROTOCOL and st["T"] == 1000 and st["image_size"] == 8 and st["channels"] == 1
    assert st["capabilities"] == ["variation"] and st["model"] == "toy-model" and len(st["model_id"]) == 64
    assert st["limits"]["max_batch"] == 4 and TOKEN not in r.text
    r = client.post("/v1/variations", json={"images": []})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_variations_equal_the_targets_own(client, images):
    seeds = [[11, 12], [13, 14]]
    r = client.post("/v1/variations", headers=AUTH, json={"images": [png(a) for a in images[:2]], "t": 100, "k": 50, "n": 2, "seed": seeds})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seeds"] == seeds and body["t"] == 100 and body["k"] == 50
    assert body["nfe"] == 4 * 2  # 4 rows x t/k
    ref_target = ToyTarget(ToyParams())
    x = torch.stack([torch.from_numpy(a.astype(np.float32) / 127.5 - 1)[None] for a in images[:2]])
    ref = ref_target.variation(x, 100, 50, seeds, clip=True)  # [2, n=2, C, H, W]
    got = torch.stack([torch.stack([unpng(v) for v in per]) for per in body["variations"]])
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1 / 127.5 + 1e-6  # 8-bit PNG quantisation only


def test_strength_steps_and_seed_forms(client, images):
    one = [png(images[0])]
    a = client.post("/v1/variations", headers=AUTH, json={"images": one, "strength": 0.1, "steps": 2, "seed": 5, "n": 3}).json()
    assert (a["t"], a["k"]) == (100, 50)
    assert a["seeds"][0][0] == 5 and len(set(a["seeds"][0])) == 3
    # the first m of n variations are an m-variation request's; a per-image seed list means the same
    b = client.post("/v1/variations", headers=AUTH, json={"images": one, "t": 100, "k": 50, "seed": [5], "n": 2}).json()
    assert b["seeds"][0] == a["seeds"][0][:2] and b["variations"][0] == a["variations"][0][:2]
    c = client.post("/v1/variations", headers=AUTH, json={"images": one * 2, "t": 100, "k": 50, "seed": 7}).json()
    assert c["seeds"] == [[7], [protocol.derive(7, 1)]]
    d = client.post("/v1/variations", headers=AUTH, json={"images": one, "t": 100, "k": 100}).json()
    assert len(d["seeds"][0]) == 1  # no seed: a fresh one, reported


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"t": None}, "exactly one of `t`"),
        ({"strength": 0.1}, "exactly one of `t`"),
        ({"t": 1000}, "0 < t < T=1000"),
        ({"t": 0}, "0 < t < T=1000"),
        ({"k": 30}, "divide"),
        ({"k": None, "steps": 3}, "divide"),
        ({"k": None}, "exactly one of `k`"),
        ({"n": 6}, "between 1 and 5"),
        ({"n": 0}, "between 1 and 5"),
        ({"seed": [1, 2]}, "`seed` has 2 entries"),
        ({"seed": [[1, 2]]}, "n=1"),
        ({"seed": -1}, "2**63"),
        ({"seed": 2**63}, "2**63"),
        ({"caption": ["a", "b"]}, "`caption` has 2"),
        ({"images": ["not base64!"]}, "images[0]: not valid base64"),
        ({"images": [base64.b64encode(b"hello").decode()]}, "not a readable image"),
        ({"images": [png(np.zeros((9, 8), np.uint8))]}, "8x9; this model takes 8x8"),
        ({"images": [png(np.zeros((8, 8), np.uint8))] * 5}, "at most 4"),
        ({"extra": 1}, "`extra`"),
        ({"t": "many"}, "`t`"),
    ],
)
def test_malformed_requests_get_400_with_a_reason(client, images, change, reason):
    body = {"images": [png(images[0])], "t": 100, "k": 50}
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    r = client.post("/v1/variations", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]


def test_body_limits(client, images):
    r = client.post("/v1/variations", headers={**AUTH, "Content-Type": "application/json"}, content=b"{" + b" " * 30_000 + b"}")
    assert r.status_code == 413
    # no Content-Length (chunked): counted while the body streams in
    r = client.post("/v1/variations", headers={**AUTH, "Content-Type": "application/json"}, content=iter([b"{" + b" " * 8000] * 4))
    assert r.status_code == 413 and "larger than 20000 bytes" in r.json()["error"]
    r = client.post("/v1/variations", headers={**AUTH, "Content-Type": "application/json"}, content=b"[1,")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert client.post("/v1/variations", headers={**AUTH, "Content-Type": "application/json"}, content=b"[]").json()["error"] == "the body must be a JSON object"
    assert client.get("/nothing-here", headers=AUTH).status_code == 404


def test_grayscale_target_accepts_rgb_png(client):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    r = client.post("/v1/variations", headers=AUTH, json={"images": [png(rgb)], "t": 100, "k": 50, "seed": 1})
    assert r.status_code == 200


def test_serve_cli_errors_exit_2():
    code, out = invoke(["serve", "--target", "no-such-target", "--port", "0"])
    assert code == 2 and "unknown target plugin" in out and no_traceback(out)
    code, out = invoke(["serve", "--target", "x", "--token-env", "AUDIT_SERVE_TEST_UNSET_VAR"])
    assert code == 2 and "AUDIT_SERVE_TEST_UNSET_VAR is not set" in out
    code, out = invoke(["serve", "--help"])
    assert code == 0 and "--token-env" in out


def test_seed_derivation_is_stable():
    assert protocol.derive(5, 0) == 5
    assert protocol.derive(5, 1) == protocol.derive(5, 1) != protocol.derive(5, 2)
    assert 0 <= protocol.derive(2**63 - 1, 3) < 2**63
