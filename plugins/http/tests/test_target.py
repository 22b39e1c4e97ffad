"""The http target against `audit serve`'s app on a loopback port (in this process): exact
variations, request packing, seeds, the query cache, auth and parameter errors."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from audit_http import server as serve
from audit_core.data.cache import QueryCache
from audit_core.plugin.targets import TargetContext
from audit_core.testing import ToyParams, ToyTarget
from audit_http.client import RemoteError
from audit_http.target import HTTPParams, HTTPTarget
from audit_http.testing import FaultInjector, echo_app

TOKEN = "target-test-token-77Qx"


class Counter:
    """ASGI middleware counting POSTs and remembering their bodies' sizes."""

    def __init__(self, app):
        self.app, self.posts = app, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            self.posts += 1
        await self.app(scope, receive, send)


@pytest.fixture
def toy_server(served, monkeypatch):
    monkeypatch.setenv("HTTP_TEST_TOKEN", TOKEN)
    svc = serve.Service(ToyTarget(ToyParams()), "toy-model", serve.Limits(max_batch=8, max_n=16))
    app = Counter(serve.create_app(svc, TOKEN))
    url = served(app)
    yield url, app
    svc.close()


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g).float() / 127.5 - 1


def test_variations_match_the_local_target(toy_server):
    url, counter = toy_server
    tg = HTTPTarget(HTTPParams(url=url, token_env="HTTP_TEST_TOKEN", rows_per_request=10, concurrency=3))
    assert (tg.image_size, tg.channels, tg.num_train_timesteps, tg.kind) == (8, 1, 1000, "pixel")
    x = images(6)  # 6 images x n=5
    seeds = [[100 + 5 * i + j for j in range(5)] for i in range(6)]
    out = tg.variation(x, 100, 50, seeds)
    assert out.shape == (6, 5, 1, 8, 8)
    ref = ToyTarget(ToyParams()).variation(x, 100, 50, seeds, clip=True)
    assert (out - ref).abs().max() <= 1 / 127.5 + 1e-6
    assert counter.posts == 3  # 2 images x 5 variations per request
    assert tg.stats.queries == 30 and tg.stats.nfe == 60
    d = tg.describe()
    assert d["seeds"].startswith("honoured") and d["requests"] == 4 and d["retries"] == 0
    assert d["server"]["model"] == "toy-model"
    assert TOKEN not in str(d) and TOKEN not in tg.identity()
    assert url in tg.identity() and d["server"]["model_id"] in tg.identity()
    tg.close()


def test_rows_of_distinct_images_are_packed_within_server_limits(toy_server):
    url, counter = toy_server
    tg = HTTPTarget(HTTPParams(url=url, token_env="HTTP_TEST_TOKEN"))  # rows_per_request 64, server max_batch 8
    x = images(20, seed=1)
    out = tg.variation(x, 200, 100, [[s] for s in range(20)])
    ref = ToyTarget(ToyParams()).variation(x, 200, 100, [[s] for s in range(20)], clip=True)
    assert (out - ref).abs().max() <= 1 / 127.5 + 1e-6
    assert counter.posts == 3  # 8 + 8 + 4 images
    # an image repeated more often than the server's max_n is split
    counter.posts = 0
    tg.variation(images(1), 100, 50, [list(range(20))])
    assert counter.posts == 2  # 16 + 4 variations
    tg.close()


def test_the_query_cache_wraps_the_endpoint(toy_server, tmp_path):
    url, counter = toy_server
    ctx = TargetContext(cache=QueryCache(tmp_path / "cache"))
    tg = HTTPTarget(HTTPParams(url=url, token_env="HTTP_TEST_TOKEN"), ctx)
    x = images(4)
    a = tg.variation(x, 100, 50, [[1], [2], [3], [4]])
    posts = counter.posts
    b = tg.variation(x, 100, 50, [[1], [2], [3], [4]])
    assert counter.posts == posts and torch.equal(a, b) and tg.stats.cache_hits == 4
    assert tg.stats.cached_nfe == 8  # nfe_per_query = t/k
    tg.close()


def test_a_missing_token_is_refused_with_exit_code_2_semantics(toy_server, monkeypatch):
    url, _ = toy_server
    with pytest.raises(RemoteError, match="401"):
        HTTPTarget(HTTPParams(url=url))
    monkeypatch.setenv("HTTP_TEST_WRONG", "not-the-token")
    with pytest.raises(RemoteError, match=r"check the token in \$HTTP_TEST_WRONG"):
        HTTPTarget(HTTPParams(url=url, token_env="HTTP_TEST_WRONG"))


def test_server_errors_surface_with_the_reason(toy_server):
    url, counter = toy_server
    tg = HTTPTarget(HTTPParams(url=url, token_env="HTTP_TEST_TOKEN", num_train_timesteps=2000))  # the server has T=1000
    posts = counter.posts
    with pytest.raises(ValueError, match="k=30 must be positive and divide t=100"):  # checked before any query
        tg.variation(images(2), 100, 30, [[1], [2]])
    assert counter.posts == posts
    with pytest.raises(RemoteError, match=r"answered 400: `t`: t=1500 must satisfy 0 < t < T=1000"):
        tg.variation(images(2), 1500, 500, [[1], [2]])
    tg.close()


@pytest.mark.parametrize(
    "url, match",
    [
        ("ftp://host", "http:// or https://"),
        ("http://user:pw@host:1", "credentials"),
        ("http://host/?key=abc", "query string"),
    ],
)
def test_bad_urls(url, match):
    with pytest.raises(ValidationError, match=match):
        HTTPParams(url=url)


def test_not_an_audit_endpoint(served):
    from fastapi import FastAPI

    app = FastAPI()
    app.get("/")(lambda: {"hello": "world"})
    with pytest.raises(RemoteError, match="does not speak the audit-variation protocol"):
        HTTPTarget(HTTPParams(url=served(app)))


def test_a_server_that_ignores_seeds_is_recorded(served):
    class ForgetSeeds:
        """The echo stub, but answering with other seeds than it was sent."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            async def rewrite(message):
                if message["type"] == "http.response.body" and message.get("body"):
                    message = {**message, "body": message["body"].replace(b'"seeds":[[1', b'"seeds":[[7')}
                await send(message)

            await self.app(scope, receive, rewrite)

    url = served(ForgetSeeds(echo_app(0.0, 4)))
    tg = HTTPTarget(HTTPParams(url=url))
    x = images(2)
    assert torch.equal(tg.variation(x, 100, 50, [[1], [2]])[:, 0], x)  # the echo returns its input
    assert tg.describe()["seeds"].startswith("not honoured")
    assert any("own randomness" in n for n in tg.describe()["notes"])
    tg.close()


def test_bounded_concurrency(served):
    inner = echo_app(0.05, capacity=64)
    state = {"now": 0, "peak": 0}

    async def gauge(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            try:
                await inner(scope, receive, send)
            finally:
                state["now"] -= 1
        else:
            await inner(scope, receive, send)

    url = served(gauge)
    tg = HTTPTarget(HTTPParams(url=url, concurrency=3, rows_per_request=1))
    tg.variation(images(12), 100, 50, [[s] for s in range(12)])
    assert state["peak"] == 3
    tg.close()


def test_fault_injector_is_transparent_at_rate_zero(served):
    url = served(FaultInjector(echo_app(0.0, 4), fail_rate=0.0, max_delay_s=0.0))
    tg = HTTPTarget(HTTPParams(url=url))
    x = images(3)
    with pytest.warns(DeprecationWarning, match="seed_grid"):  # the flat form of earlier versions still works
        assert torch.equal(tg.variation(x, 100, 50, [1, 2, 3]), x)
    tg.close()


class SlowToy(ToyTarget):
    def eps(self, z_t, t, captions=None):
        import time

        time.sleep(1.0)
        return super().eps(z_t, t, captions)


def test_a_request_whose_client_timed_out_is_not_computed(served):
    import threading

    import httpx

    from audit_core.data import png_b64

    svc = serve.Service(SlowToy(ToyParams()), "slow")
    url = served(serve.create_app(svc))
    body = {"images": [png_b64(images(1)[0])], "t": 100, "k": 100, "seed": 1}  # one NFE: 1 s
    first = threading.Thread(target=lambda: httpx.post(url + "/v1/variations", json=body, timeout=30))
    first.start()
    import time

    deadline = time.monotonic() + 10
    while not svc.turn.locked() and time.monotonic() < deadline:  # until the first request holds the model
        time.sleep(0.01)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/v1/variations", json=body, timeout=0.3)  # queued behind it, gives up
    first.join()
    deadline = time.monotonic() + 5
    while svc.skipped == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.skipped == 1 and svc.requests == 1
    assert svc.target.stats.queries == 1  # the abandoned request never reached the model
    svc.close()
