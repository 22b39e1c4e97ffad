"""`audit serve` with its default settings (loopback, no token), attacked from a web page and by
slow clients (issue 34, security), over real sockets on 127.0.0.1:

- DNS rebinding: a page on ``evil.example`` whose name resolves to 127.0.0.1 reaches the server
  with ``Host: evil.example``; it was answered, so the page could drive and read the model.
  Without a token only the loopback names are answered now (403 otherwise).
- A cross-site "simple request" (``text/plain``, a form, no type: no CORS preflight) was
  accepted as JSON. Now 415.
- Eight connections that send one byte of a chunked body and then nothing reserved
  ``max_body`` each from the pending-body budget, so every other POST got 503 while they stayed
  open. Now the budget is charged by the bytes that arrived and a body must arrive within
  ``body_timeout_s`` (408).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from audit_core.testing import ToyParams, ToyTarget  # noqa: E402
from audit_http import server as serve  # noqa: E402
from audit_http.testing import LoopbackServer  # noqa: E402

TOKEN = "serve-security-token-71c4"


def png_b64() -> str:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


BODY = json.dumps({"images": [png_b64()], "t": 100, "k": 50}).encode()


def raw(port: int, head: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict]:
    """Send one request as written (headers verbatim) over a real socket; (status, JSON answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        return read_answer(s)


def read_answer(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:]) if k.strip().lower() == b"content-length"), 0)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, json.loads(rest[:length] or b"{}")


@pytest.fixture
def server():
    """``server(token=None, **limits) -> port``: audit serve's app (toy target) on a loopback port."""
    made = []

    def start(token: str | None = None, **limits) -> int:
        svc = serve.Service(ToyTarget(ToyParams()), "toy", serve.Limits(**limits))
        s = LoopbackServer(serve.create_app(svc, token))
        url = s.__enter__()
        made.append((s, svc))
        return int(url.rsplit(":", 1)[1])

    yield start
    for s, svc in reversed(made):
        s.__exit__(None, None, None)
        svc.close()


def get(port: int, host: str | None, extra: str = "") -> tuple[int, dict]:
    # HTTP/1.0 may leave the Host header out (HTTP/1.1 servers refuse that themselves)
    version = "1.1" if host is not None else "1.0"
    head = f"GET / HTTP/{version}\n" + (f"Host: {host}\n" if host is not None else "") + extra + "Connection: close\n"
    return raw(port, head)


def post(port: int, host: str, ctype: str | None, body: bytes = BODY, extra: str = "") -> tuple[int, dict]:
    head = (f"POST /v1/variations HTTP/1.1\nHost: {host}\n" + (f"Content-Type: {ctype}\n" if ctype else "")
            + f"Content-Length: {len(body)}\n{extra}Connection: close\n")
    return raw(port, head, body)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example:{port}", "127.0.0.1.nip.io:{port}",
                                  "192.168.1.5:{port}", "0.0.0.0:{port}", "[::1", "localhost:abc", "", None])
def test_without_a_token_another_host_name_is_refused(server, host):
    """Planted bug: the Host check missing (or accepting any name ending in a loopback name):
    a DNS-rebinding page reads the model's status and queries it."""
    port = server()
    host = host.format(port=port) if host is not None else None
    status, answer = get(port, host)
    assert status == 403 and "localhost" in answer["error"], answer
    status, _ = post(port, host or "evil.example", "application/json")
    assert status == 403


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "LOCALHOST:{port}", "localhost", "127.0.0.1"])
def test_without_a_token_the_loopback_names_are_answered(server, host):
    port = server()
    status, answer = get(port, host.format(port=port))
    assert status == 200 and answer["protocol"] == serve.PROTOCOL
    status, answer = post(port, host.format(port=port), "application/json")
    assert status == 200 and len(answer["variations"]) == 1


def test_with_a_token_the_token_decides_not_the_host(server):
    port = server(token=TOKEN)
    assert get(port, "evil.example")[0] == 401
    assert get(port, "audit-box.internal:8000", f"Authorization: Bearer {TOKEN}\n")[0] == 200


@pytest.mark.parametrize("ctype", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx", None])
def test_a_body_that_is_not_declared_json_is_refused(server, ctype):
    """Planted bug: the content-type check missing: a page's cross-site ``fetch(url, {method:
    "POST", body: JSON.stringify(...)})`` (text/plain, no preflight) drives the model."""
    port = server()
    status, answer = post(port, f"127.0.0.1:{port}", ctype)
    assert status == 415 and "application/json" in answer["error"], answer


def test_json_with_a_charset_is_accepted(server):
    port = server()
    assert post(port, f"localhost:{port}", "application/json; charset=utf-8")[0] == 200


def open_trickle(port: int) -> socket.socket:
    """A POST with a chunked body that sends one byte, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        f"POST /v1/variations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n".encode()
    )
    return s


def test_stalled_bodies_neither_block_other_posts_nor_stay_forever(server):
    """Planted bugs: a body of unknown length charged ``max_body`` up front (two stalled
    connections exhaust a budget of 2.5 bodies: every other POST 503), and no body deadline (the
    stalled connections hold their bytes for as long as they stay open)."""
    port = server(max_body_bytes=40_000, max_pending_bytes=100_000, body_timeout_s=1.5)
    stalled = [open_trickle(port) for _ in range(8)]
    try:
        time.sleep(0.3)  # the server has read their one byte
        t0 = time.monotonic()
        status, answer = post(port, f"127.0.0.1:{port}", "application/json")
        assert status == 200, answer  # before: 503 "busy: too many request bytes queued"
        for s in stalled:  # each gets 408 once its deadline passes
            status, answer = read_answer(s)
            assert status == 408 and "did not arrive" in answer["error"], answer
        assert time.monotonic() - t0 < 6
    finally:
        for s in stalled:
            s.close()


def test_a_trickling_body_is_cut_at_the_deadline(server):
    """A client sending one byte every 0.2 s never trips a per-read timeout; the body deadline
    ends it."""
    port = server(body_timeout_s=1.0)
    s = open_trickle(port)
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError):  # the server answers 408 and closes while we still send
            for _ in range(50):
                time.sleep(0.2)
                s.sendall(b"1\r\n \r\n")
        assert time.monotonic() - t0 < 5
    finally:
        s.close()


def test_the_pending_budget_still_caps_bytes_that_arrived(server):
    """Charging by arrival still bounds what is held: a body larger than the whole budget is
    refused (503) up front from its Content-Length, and as it streams when chunked."""
    port = server(max_body_bytes=40_000, max_pending_bytes=2_000)
    big = json.dumps({"images": [png_b64()] * 40, "t": 100, "k": 50}).encode()
    assert post(port, f"127.0.0.1:{port}", "application/json", big)[0] == 503
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /v1/variations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                  f"Transfer-Encoding: chunked\r\n\r\n{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n")
        status, answer = read_answer(s)
    assert status == 503 and "busy" in answer["error"]
    assert post(port, f"127.0.0.1:{port}", "application/json")[0] == 200  # the budget was given back


@pytest.mark.parametrize("value, name", [(b"localhost:8000", "localhost"), (b"[::1]:80", "::1"), (b"[::1]", "::1"),
                                         (b"Example.COM", "example.com"), (b"a:b", None), (b"[::1]x", None),
                                         (b"h:1234567", None), (b"", None), (b"\xff", None), (b":80", None)])
def test_host_name_parsing(value, name):
    assert serve.host_name(value) == name
