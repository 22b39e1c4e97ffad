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


def _read_at_most(response: httpx.Response, limit: int, deadline: float | None = None) -> bytes | None:
    """The body of a streamed response, or None once it passes ``limit`` bytes (the rest is never
    read). Past ``deadline`` (``time.monotonic()``) it raises ``httpx.ReadTimeout``: the read
    timeout alone restarts with every chunk, so an answer trickling a byte a second never ends."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            return None
        if deadline is not None and time.monotonic() > deadline:
            raise httpx.ReadTimeout("the answer did not arrive in time", request=response.request)
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
        self.timeout_s = float(timeout_s)
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

    def request(
        self, method: str, path: str, json: Any = None, max_bytes: int = 64 << 20, *, content: bytes | None = None,
        files: dict[str, Any] | None = None, data: dict[str, str] | None = None, params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None, raw: bool = False,
    ) -> Any:
        """Send one request (retrying what is transient) -> its decoded JSON answer, or with
        ``raw`` its ``(body bytes, headers)``. The body is ``json``, raw ``content`` or a
        multipart form (``files``, ``data``); each try sends it anew. An answer over ``max_bytes``
        is refused without being read in full (the server is not trusted)."""
        url = self.base_url + path
        last = ""
        for attempt in range(self.policy.max_retries + 1):
            retry_after = None
            with self._lock:
                self.requests += 1
            deadline = time.monotonic() + self.timeout_s  # the whole answer, not each read
            try:
                with self.http.stream(
                    method, url, json=json, content=content, files=files, data=data, params=params, headers=headers,
                ) as response:
                    status = response.status_code
                    if 200 <= status < 300:
                        if raw:
                            return self._bytes(response, method, url, max_bytes, deadline), httpx.Headers(response.headers)
                        return self._json(response, method, url, max_bytes, deadline)
                    response_reason = _reason(response, _read_at_most(response, 64 << 10, deadline))
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s:g}s"
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
    def _bytes(response: httpx.Response, method: str, url: str, max_bytes: int, deadline: float | None = None) -> bytes:
        too_big = RemoteError(
            f"{method} {url} answered with more than {max_bytes} bytes, more than the request can need; refused "
            f"(is the url an audit-variation server?)"
        )
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            raise too_big
        body = _read_at_most(response, max_bytes, deadline)
        if body is None:
            raise too_big
        return body

    @classmethod
    def _json(cls, response: httpx.Response, method: str, url: str, max_bytes: int, deadline: float | None = None) -> Any:
        body = cls._bytes(response, method, url, max_bytes, deadline)
        try:
            return _json.loads(body)
        except (ValueError, RecursionError):
            raise RemoteError(f"{method} {url} answered {response.status_code} with a body that is not JSON") from None

    def close(self) -> None:
        self.http.close()


class Retrier:
    """The retry loop of :class:`Client` for services reached through another library's client
    (``gradio_client``, for one): ``call(fn, what)`` runs ``fn()`` and retries it when
    ``transient(exc)`` names the failure (a short reason, e.g. ``"timeout"``), with the same backoff,
    jitter and accounting (``requests``, ``retries``, ``waited_s``, ``failures``)."""

    def __init__(
        self, policy: RetryPolicy, transient: Callable[[BaseException], str | None],
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.policy = policy
        self.transient = transient
        self.sleep = sleep
        self.rng = random.Random()  # jitter only
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.waited_s = 0.0
        self.failures: dict[str, int] = {}

    def call(self, fn: Callable[[], Any], what: str) -> Any:
        last = ""
        for attempt in range(self.policy.max_retries + 1):
            with self._lock:
                self.requests += 1
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below; anything else propagates
                reason = self.transient(exc)
                if reason is None:
                    raise
                last = f"{reason} ({str(exc)[:200]})"
            if attempt == self.policy.max_retries:
                break
            wait = self.policy.delay(attempt, None, self.rng)
            with self._lock:
                self.retries += 1
                self.waited_s += wait
                self.failures[reason] = self.failures.get(reason, 0) + 1
            self.sleep(wait)
        raise RemoteError(
            f"{what} failed {self.policy.max_retries + 1} times (max_retries={self.policy.max_retries}); "
            f"last: {last}. Everything scored so far is kept: resume the run with --resume"
        )
