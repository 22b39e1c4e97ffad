"""The retrying client against httpx.MockTransport: what is retried, how long it waits
(exponential backoff with jitter, Retry-After honoured), what fails at once, and the messages."""

from __future__ import annotations

import email.utils
import random
import time

import httpx
import pytest

from audit_http.client import Client, RemoteError, RetryPolicy, parse_retry_after


def make(responses, policy=None, token="tok-client-1234", token_env="MY_TOKEN"):
    """A client whose transport answers from ``responses`` (a list of callables or Responses);
    returns (client, seen requests, recorded sleeps)."""
    seen, sleeps = [], []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        return item(request) if callable(item) else item

    client = Client(
        "http://api.test/base/", token, 5.0, policy or RetryPolicy(max_retries=3, backoff_s=0.1, max_backoff_s=1.0),
        token_env=token_env, transport=httpx.MockTransport(handler), sleep=sleeps.append,
    )
    return client, seen, sleeps


def ok(body=None):
    return httpx.Response(200, json=body if body is not None else {"ok": True})


def test_success_sends_the_bearer_token_to_the_right_url():
    client, seen, sleeps = make([ok({"x": 1})])
    assert client.request("POST", "/v1/variations", json={"a": 1}) == {"x": 1}
    assert str(seen[0].url) == "http://api.test/base/v1/variations"
    assert seen[0].headers["authorization"] == "Bearer tok-client-1234"
    assert sleeps == [] and client.retries == 0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status):
    client, seen, sleeps = make([httpx.Response(status), httpx.Response(status), ok()])
    assert client.request("GET", "/") == {"ok": True}
    assert len(seen) == 3 and len(sleeps) == 2 and client.retries == 2
    assert client.failures == {f"HTTP {status}": 2}


def test_timeouts_and_dropped_connections_are_retried():
    def timeout(request):
        raise httpx.ReadTimeout("slow", request=request)

    def reset(request):
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    client, seen, sleeps = make([timeout, reset, ok()])
    assert client.request("GET", "/") == {"ok": True}
    assert client.failures == {"timeout": 1, "RemoteProtocolError": 1}


def test_backoff_is_exponential_with_jitter():
    policy = RetryPolicy(max_retries=5, backoff_s=0.1, max_backoff_s=0.5)
    rng = random.Random(0)
    for attempt, cap in enumerate([0.1, 0.2, 0.4, 0.5, 0.5]):
        waits = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(cap / 2 <= w <= cap for w in waits)
        assert max(waits) - min(waits) > cap / 4  # jittered, not fixed


def test_retry_after_is_honoured_in_seconds_and_as_a_date():
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    client, seen, sleeps = make([
        httpx.Response(503, headers={"Retry-After": "2"}),
        httpx.Response(429, headers={"Retry-After": date}),
        ok(),
    ])
    client.request("GET", "/")
    assert 2.0 <= sleeps[0] <= 2.1  # never sooner than asked
    assert 27 <= sleeps[1] <= 31


def test_a_huge_retry_after_is_capped():
    policy = RetryPolicy(max_retries=1, backoff_s=0.1, max_retry_after_s=5)
    client, _, sleeps = make([httpx.Response(503, headers={"Retry-After": "86400"}), ok()], policy)
    client.request("GET", "/")
    assert sleeps == [5]


def test_client_errors_are_not_retried_and_name_the_reason():
    client, seen, sleeps = make([httpx.Response(400, json={"error": "`k` must divide t"})])
    with pytest.raises(RemoteError, match=r"answered 400: `k` must divide t"):
        client.request("POST", "/v1/variations", json={})
    assert len(seen) == 1 and sleeps == []


def test_auth_failures_say_which_variable_to_check():
    client, seen, _ = make([httpx.Response(401, json={"error": "missing or wrong bearer token"})])
    with pytest.raises(RemoteError, match=r"refused \(401.*check the token in \$MY_TOKEN") as info:
        client.request("GET", "/")
    assert "tok-client-1234" not in str(info.value)
    client, _, _ = make([httpx.Response(401)], token=None, token_env=None)
    with pytest.raises(RemoteError, match="target.token_env"):
        client.request("GET", "/")


def test_giving_up_after_max_retries():
    client, seen, sleeps = make([httpx.Response(503)] * 4)
    with pytest.raises(RemoteError, match=r"failed 4 times \(max_retries=3\); last: HTTP 503.*--resume"):
        client.request("GET", "/")
    assert len(seen) == 4 and len(sleeps) == 3


def test_redirects_are_not_followed():
    client, seen, _ = make([httpx.Response(302, headers={"Location": "http://elsewhere.test/"})])
    with pytest.raises(RemoteError, match="302"):
        client.request("GET", "/")
    assert len(seen) == 1


def test_parse_retry_after():
    assert parse_retry_after(None) is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
