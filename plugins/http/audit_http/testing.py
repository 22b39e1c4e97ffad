"""Loopback servers for tests and benchmarks (FastAPI + uvicorn, dependencies of audit-http).

- :class:`LoopbackServer`: run any ASGI app with uvicorn in a background thread on a free
  127.0.0.1 port (``with LoopbackServer(app) as url: ...``).
- :class:`FaultInjector`: ASGI middleware that fails a fraction of requests with 503 (some with
  ``Retry-After``), delays the others, and lets a few hang past the client's timeout.
- :func:`echo_app`: an ``audit-variation/1`` stub that sleeps a fixed latency per request, serves
  at most ``capacity`` requests at once and returns the input images as the variations.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

try:  # module level, so that FastAPI can resolve the endpoint annotations
    from starlette.requests import Request
except ImportError:  # pragma: no cover - fastapi is a dependency of audit-http
    Request = Any  # type: ignore[misc,assignment]


class LoopbackServer:
    """``with LoopbackServer(app) as url``: uvicorn in a daemon thread on 127.0.0.1:<free port>."""

    def __init__(self, app: Any, host: str = "127.0.0.1"):
        self.app = app
        self.host = host
        self.url = ""

    def __enter__(self) -> str:
        import uvicorn

        from audit_http.server import bind

        self.sock = bind(self.host, 0)
        port = self.sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.01)
        self.url = f"http://{self.host}:{port}"
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class FaultInjector:
    """Wrap an ASGI app: each request (GET / included) independently fails with 503 with
    probability ``fail_rate`` (every ``retry_after_every``-th failure carries ``Retry-After:
    retry_after``), else hangs ``hang_s`` with probability ``hang_rate`` (longer than the client's
    timeout: the client gives up and retries) and is otherwise delayed uniformly up to
    ``max_delay_s`` before being served. Deterministic given ``seed`` and the arrival order."""

    def __init__(
        self, app: Any, fail_rate: float = 0.3, max_delay_s: float = 0.05, retry_after_every: int = 4,
        retry_after: str = "1", hang_rate: float = 0.0, hang_s: float = 0.0, seed: int = 0,
    ):
        self.app = app
        self.fail_rate, self.max_delay_s = fail_rate, max_delay_s
        self.retry_after_every, self.retry_after = retry_after_every, retry_after
        self.hang_rate, self.hang_s = hang_rate, hang_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "failed": 0, "retry_after": 0, "hung": 0, "served": 0}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.lock:
            self.counts["requests"] += 1
            u, v = self.rng.random(), self.rng.random()
            fail = u < self.fail_rate
            hang = not fail and v < self.hang_rate
            if fail:
                self.counts["failed"] += 1
                with_retry_after = self.retry_after_every > 0 and self.counts["failed"] % self.retry_after_every == 0
                self.counts["retry_after"] += with_retry_after
            elif hang:
                self.counts["hung"] += 1
            else:
                self.counts["served"] += 1
        if fail:
            headers = [(b"retry-after", self.retry_after.encode())] if with_retry_after else []
            from audit_http.server import send_json

            await send_json(send, 503, {"error": "injected fault"}, headers)
            return
        await asyncio.sleep(self.hang_s if hang else v * self.max_delay_s)
        await self.app(scope, receive, send)


def echo_app(latency_s: float, capacity: int, image_size: int = 8, channels: int = 1) -> Any:
    """A stub ``audit-variation/1`` server: every POST waits ``latency_s`` holding one of
    ``capacity`` slots (more requests queue), then answers with its input images as the variations
    (``n`` copies each) and the seeds it was sent. Throughput is at most ``capacity / latency_s``
    requests per second."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    slots = asyncio.Semaphore(capacity)  # created unbound; binds to the server's loop on first use

    @app.get("/")
    async def status() -> dict[str, Any]:
        return {
            "protocol": "audit-variation/1", "target": "echo", "model": "echo", "model_id": f"echo-{latency_s}-{capacity}",
            "kind": "pixel", "T": 1000, "image_size": image_size, "channels": channels, "capabilities": ["variation"],
            "seeds": True, "limits": {"max_batch": 1024, "max_n": 1024, "max_body_bytes": 1 << 30},
        }

    async def handle(request: Request) -> JSONResponse:
        body = await request.json()
        async with slots:
            await asyncio.sleep(latency_s)
        n = int(body.get("n", 1))
        return JSONResponse({
            "protocol": "audit-variation/1", "t": body.get("t"), "k": body.get("k"), "n": n,
            "variations": [[img] * n for img in body["images"]], "seeds": body.get("seed"), "nfe": 0,
        })

    app.add_api_route("/v1/variations", handle, methods=["POST"])
    return app


def main(argv: list[str] | None = None) -> None:
    """``python -m audit_http.testing --latency L --capacity C [--size S] [--channels N]``: the
    echo stub on a free loopback port (prints ``listening on URL``) until killed."""
    import argparse

    import uvicorn

    from audit_http.server import bind

    ap = argparse.ArgumentParser(description="the echo stub of audit_http.testing")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--capacity", type=int, default=8)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--channels", type=int, default=1)
    args = ap.parse_args(argv)
    sock = bind("127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(echo_app(args.latency, args.capacity, args.size, args.channels), log_level="warning",
                            access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
