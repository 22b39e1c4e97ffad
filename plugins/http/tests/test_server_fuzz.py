"""A Hypothesis fuzz test of `audit serve`'s request model: bodies built around
``VariationRequest`` (valid, off-by-one, wrongly typed, extra and missing fields, nested
garbage) are POSTed to the app; every answer is a 200 with the requested shape or a 4xx/503 with
a JSON ``error``, never a 5xx or a traceback. Bounded: 150 examples, well under a minute."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from audit_core.testing import ToyParams, ToyTarget
from audit_http import server as serve

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


RNG = np.random.default_rng(0)
GOOD = [_png(RNG.integers(0, 256, (8, 8), dtype=np.uint8)), _png(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
        _png(RNG.integers(0, 65536, (8, 8), dtype=np.uint16))]
BAD = [_png(np.zeros((9, 8), np.uint8)), "", "not base64!", base64.b64encode(b"GIF89a").decode(),
       "data:image/png;base64," + GOOD[0]]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=8))
json_any = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12)
small_int = st.integers(-3, 1003)
field = {
    "images": st.one_of(st.lists(st.sampled_from(GOOD + BAD), min_size=0, max_size=5), json_any),
    "t": st.one_of(small_int, st.sampled_from([100, 200, 10]), json_any),
    "strength": st.one_of(st.floats(-0.5, 1.5, allow_nan=False), json_any),
    "k": st.one_of(st.sampled_from([1, 10, 50, 100, 0, -1, 30]), json_any),
    "steps": st.one_of(st.integers(-1, 12), json_any),
    "n": st.one_of(st.integers(-1, 5), json_any),
    "seed": st.one_of(st.integers(-1, 2**64), st.lists(st.integers(0, 2**63), max_size=3),
                      st.lists(st.lists(st.integers(-1, 2**63), max_size=3), max_size=3), json_any),
    "caption": st.one_of(st.text(max_size=10), st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=3), json_any),
    "extra": json_any,
}
# near-valid bodies (so that the model runs too) and free-form ones
near_valid = st.fixed_dictionaries(
    {"images": st.lists(st.sampled_from(GOOD), min_size=1, max_size=4), "t": st.sampled_from([100, 200]),
     "k": st.sampled_from([50, 100])},
    optional={"n": st.integers(0, 5), "seed": field["seed"], "caption": field["caption"]},
)
bodies = st.one_of(near_valid, st.fixed_dictionaries({}, optional=field))


@pytest.fixture(scope="module")
def client():
    svc = serve.Service(ToyTarget(ToyParams()), "toy", serve.Limits(max_batch=4, max_n=4, max_body_bytes=200_000))
    with TestClient(serve.create_app(svc), raise_server_exceptions=False, base_url="http://localhost") as c:
        yield c
    svc.close()


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_no_request_gets_a_5xx(client, body):
    r = client.post("/v1/variations", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 400, 413, 503), (r.status_code, r.text, body)
    answer = r.json()
    if r.status_code == 200:
        B, n = len(body["images"]), body.get("n", 1)
        assert [len(v) for v in answer["variations"]] == [n] * B and len(answer["seeds"]) == B
    else:
        assert isinstance(answer["error"], str) and answer["error"] and "Traceback" not in answer["error"]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_no_raw_body_gets_a_5xx(client, raw):
    r = client.post("/v1/variations", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413), (r.status_code, r.text, raw)
