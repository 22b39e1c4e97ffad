"""A small HTTP client with retries: exponential backoff with jitter on 408/429/5xx, timeouts and
dropped connections, honouring ``Retry-After``. One ``httpx.Client`` (thread-safe, pooled
connections) serves every worker thread of the target."""

from __future__ import annotations

import email.utils
import json as _json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from audit_core import PluginError

#: statuses worth another try: request timeout, rate limit, server errors that are usually transient
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RemoteError(PluginError):
    """The endpoint refused a request or kept failing (exit code 2; committed batches are kept
    and ``audit run --resume`` continues)."""


@dataclass
class RetryPolicy:
    max_retries: int = 5
    backoff_s: float = 0.5  # first delay (before jitter); doubles every retry
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 300.0  # a longer Retry-After is capped (then the retry may fail again)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry ``attempt + 1``: "equal jitter" exponential backoff
        (half fixed, half random), and never less than the server's Retry-After."""
        d = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        wait = d / 2 + rng.uniform(0, d / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after_s))
        return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After``: delay-seconds (fractions accepted) or an HTTP-date; None when absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """The body of a streamed response, or None once it passes ``limit`` bytes (the rest is never
    read)."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _reason(response: httpx.Response, body: bytes | None) -> str:
    """The reason a server gave for an error status (``error``/``detail``/``message``), short."""
    if body is None:
        return response.reason_phrase
    try:
        data = _json.loads(body)
        if isinstance(data, dict):
            for key in ("error", "detail", "message"):
                if data.get(key):
                    return str(data[key])[:300]
    except (ValueError, RecursionError):
        pass
    return body[:200].decode("utf-8", "replace").strip() or response.reason_phrase


class Client:
    """``request(method, path, json)`` -> the decoded JSON answer, retrying what is transient."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout_s: float,
        policy: RetryPolicy,
        concurrency: int = 4,
        token_env: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.token_env = token_env
        self.sleep = sleep
        self.rng = random.Random()  # jitter only: it never changes what is computed
        headers = {"User-Agent": "audit-http/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            timeout=timeout_s,
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
            follow_redirects=False,  # never forward the token to another host
        )
        self._lock = threading.Lock()
        self.requests = 0  # attempts sent
        self.retries = 0
        self.waited_s = 0.0
        self.failures: dict[str, int] = {}  # reason -> count (transient failures that were retried)

    def _count(self, reason: str, waited: float) -> None:
        with self._lock:
            self.retries += 1
            self.waited_s += waited
            self.failures[reason] = self.failures.get(reason, 0) + 1

    def request(self, method: str, path: str, json: Any = None, max_bytes: int = 64 << 20) -> Any:
        """Send one request (retrying what is transient) -> its decoded JSON answer. An answer
        over ``max_bytes`` is refused without being read in full (the server is not trusted)."""
        url = self.base_url + path
        last = ""
        for attempt in range(self.policy.max_retries + 1):
            retry_after = None
            with self._lock:
                self.requests += 1
            try:
                with self.http.stream(method, url, json=json) as response:
                    status = response.status_code
                    if 200 <= status < 300:
                        return self._json(response, method, url, max_bytes)
                    response_reason = _reason(response, _read_at_most(response, 64 << 10))
            except httpx.TimeoutException:
                last = f"timed out after {self.http.timeout.read}s"
                reason = "timeout"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
                reason = type(exc).__name__
            else:
                if status in (401, 403):
                    hint = (
                        f"check the token in ${self.token_env}" if self.token_env
                        else "the server needs a token: name the environment variable that holds it in target.token_env"
                    )
                    raise RemoteError(f"{method} {url} was refused ({status} {response_reason}): {hint}")
                if status not in RETRY_STATUS:
                    raise RemoteError(f"{method} {url} answered {status}: {response_reason}")
                last = f"HTTP {status} ({response_reason})"
                reason = f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt == self.policy.max_retries:
                break
            wait = self.policy.delay(attempt, retry_after, self.rng)
            self._count(reason, wait)
            self.sleep(wait)
        raise RemoteError(
            f"{method} {url} failed {self.policy.max_retries + 1} times (max_retries={self.policy.max_retries}); "
            f"last: {last}. Everything scored so far is kept: resume the run with --resume"
        )

    @staticmethod
    def _json(response: httpx.Response, method: str, url: str, max_bytes: int) -> Any:
        too_big = RemoteError(
            f"{method} {url} answered with more than {max_bytes} bytes, more than the request can need; refused "
            f"(is the url an audit-variation server?)"
        )
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            raise too_big
        body = _read_at_most(response, max_bytes)
        if body is None:
            raise too_big
        try:
            return _json.loads(body)
        except (ValueError, RecursionError):
            raise RemoteError(f"{method} {url} answered {response.status_code} with a body that is not JSON") from None

    def close(self) -> None:
        self.http.close()
