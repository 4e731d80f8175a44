"""HTTP below the app, against a real server on loopback: idle and slow connections, header limits,
malformed requests, the connection cap (app/http_protocol.py).

Raw sockets, because all of this happens before a request reaches the app. Small settings (a 1 s
header deadline, a cap of a few connections) keep the tests quick; no timing is asserted beyond
generous deadlines.
"""

from __future__ import annotations

import contextlib
import json
import random
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.images import encode, red_png
from tests.system.test_hostile_http import Live, live, metric_lines, partial_upload

__all__ = ["live"]  # the fixture, shared with tests/system/test_hostile_http.py

GENEROUS = 15.0  # seconds: far beyond any deadline under test, so only a missing answer fails


class Reader:
    """Reads Content-Length framed responses off a socket, one after the other."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed before a whole response: {self.buffer!r}"
        self.buffer += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)


def send(sock: socket.socket, data: bytes) -> None:
    """Send what the server may stop reading halfway: its answer is what the test reads."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(port) as sock:
        send(sock, request)
        return Reader(sock).response()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection within GENEROUS seconds (what it sent is skipped)."""
    sock.settimeout(GENEROUS)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def assert_json_error(
    answer: tuple[int, dict[str, str], bytes], status: int, code: str, *, closes: bool = True
) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status, answer
    assert headers["content-type"] == "application/json", answer
    if closes:
        assert headers["connection"] == "close"
    document = json.loads(body)
    assert set(document) == {"error", "request_id"}, document
    assert document["request_id"] == headers["x-request-id"]  # logged with it
    assert headers["x-content-type-options"] == "nosniff"
    assert set(document["error"]) <= {"code", "message", "details"}
    assert document["error"]["code"] == code and document["error"]["message"]
    return dict(document["error"])


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def post_png(body: bytes) -> bytes:
    head = f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def closed_count(url: str, reason: str) -> float:
    lines = metric_lines(url, f'catdog_connections_closed_total{{reason="{reason}"}}')
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def metric_lines_when_served(url: str, name: str) -> list[str] | None:
    response = httpx.get(f"{url}/metrics", timeout=GENEROUS)
    if response.status_code != 200:
        return None
    return [line for line in response.text.splitlines() if line.startswith(name)]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_idle_and_slow_connections_filling_the_cap_do_not_lock_out_probes_or_work(
    live: Callable[..., Live], sockets: list[socket.socket]
) -> None:
    # A deadline far away: only making room can save the probes here.
    server = live(max_connections=20, header_timeout_seconds=60)
    for n in range(40):
        sock = connect(server.port)
        if n % 2:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")  # slowloris: a request never finished
        sockets.append(sock)
    with httpx.Client(base_url=server.url, timeout=GENEROUS) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        answer = client.post("/predict", content=red_png(), headers={"Content-Type": "image/png"})
        assert answer.status_code == 200 and answer.json()["label"] == "cat"
    assert closed_count(server.url, "evicted") >= 20
    # An evicted slowloris is told why.
    told = []
    for sock in sockets[1::2]:
        sock.settimeout(0.2)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            told.append(sock.recv(65536))
    assert any(b'"code":"overloaded"' in data for data in told), told


def test_over_the_cap_requests_get_a_json_503_but_probes_are_served(
    live: Callable[..., Live], sockets: list[socket.socket]
) -> None:
    server = live(max_connections=3, max_in_flight=10, retry_after_seconds=2)
    # Three uploads whose bodies never finish: three connections doing work.
    sockets.extend(partial_upload(server.port, b"\x89PNG", declared=100_000) for _ in range(3))
    deadline = time.monotonic() + GENEROUS
    while True:
        answer = exchange(server.port, get("/metadata"))
        if answer[0] == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    error = assert_json_error(answer, 503, "overloaded", closes=False)
    assert "3 connections" in error["message"]
    assert answer[1]["retry-after"] == "2"
    for probe in ("/healthz", "/readyz"):
        assert exchange(server.port, get(probe))[0] == 200
    for sock in sockets:
        sock.close()  # /metrics is not a probe: it waits for room
    deadline = time.monotonic() + GENEROUS
    while (lines := metric_lines_when_served(server.url, "catdog_connection_cap_refused_total")) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert float(lines[0].rsplit(" ", 1)[1]) >= 1, lines


@pytest.mark.parametrize("after_a_request", [False, True], ids=["fresh", "keep-alive"])
def test_slowloris_gets_a_json_408_at_the_header_deadline(
    live: Callable[..., Live], after_a_request: bool
) -> None:
    server = live(header_timeout_seconds=1)
    with connect(server.port) as sock:
        reader = Reader(sock)
        if after_a_request:
            sock.sendall(get("/healthz"))
            assert reader.response()[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        deadline = time.monotonic() + GENEROUS
        # One byte every 0.1 s, each of which would restart a per-read timer.
        while not select.select([sock], [], [], 0.1)[0] and time.monotonic() < deadline:
            send(sock, b"a")
        error = assert_json_error(reader.response(), 408, "header_timeout")
        assert error["details"] == {"header_timeout_seconds": 1.0}
        assert closed_by_server(sock)
    assert closed_count(server.url, "header_timeout") == 1


def test_a_silent_connection_is_closed_at_the_header_deadline(live: Callable[..., Live]) -> None:
    server = live(header_timeout_seconds=1)
    with connect(server.port) as sock:
        sock.settimeout(GENEROUS)
        assert sock.recv(1) == b""  # closed without an answer: no request to answer
    assert closed_count(server.url, "header_timeout") == 1


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 100_000 + b"\r\n",
        b"".join(b"X-H-%05d: v\r\n" % n for n in range(10_000)),
        b"X-Huge: " + b"a" * 8_000_000 + b"\r\n",
    ],
    ids=["100-KB-header", "10000-headers", "8-MB-header"],
)
def test_oversized_headers_get_a_json_431(live: Callable[..., Live], headers: bytes) -> None:
    server = live()
    answer = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
    error = assert_json_error(answer, 431, "headers_too_large")
    assert error["details"] == {"max_header_bytes": 65536, "max_header_count": 100}
    # Under the limits: served.
    fine = b"".join(b"X-H-%02d: %s\r\n" % (n, b"v" * 500) for n in range(90))
    assert exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + fine + b"\r\n")[0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: test\r\nBad Name: 1\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        b"FOO / HTTP/1.1\r\nHost: test\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    ],
    ids=["bad-header-name", "content-length-and-chunked", "bad-chunk-size", "unknown-method", "tls"],
)
def test_malformed_http_gets_a_json_400(live: Callable[..., Live], request_bytes: bytes) -> None:
    server = live()
    with connect(server.port) as sock:
        send(sock, request_bytes)
        error = assert_json_error(Reader(sock).response(), 400, "bad_http_request")
        assert error["details"]["reason"]
        assert closed_by_server(sock)
    assert closed_count(server.url, "bad_request") == 1


def test_pipelined_requests_are_answered_in_order_before_a_malformed_one(live: Callable[..., Live]) -> None:
    server = live()
    # Noise does not compress: a body of several reads, far over the header limit, behind headers.
    noise = encode(Image.frombytes("RGB", (300, 300), random.Random(0).randbytes(300 * 300 * 3)))
    assert len(noise) > 4 * 65536
    assert exchange(server.port, post_png(noise))[0] == 200  # head and body in one read
    with connect(server.port) as sock:
        sock.sendall(
            get("/healthz")
            + post_png(red_png())
            + post_png(noise)
            + get("/readyz")
            + b"GET /healthz HTTP/1.1\r\nHost: test\r\nBad Name: 1\r\n\r\n"
        )
        reader = Reader(sock)
        status, _, body = reader.response()
        assert (status, json.loads(body)["status"]) == (200, "ok")
        status, _, body = reader.response()
        assert (status, json.loads(body)["label"]) == (200, "cat")
        status, _, body = reader.response()
        assert (status, json.loads(body)["label"] in ("cat", "dog")) == (200, True)
        assert reader.response()[0] == 200
        assert_json_error(reader.response(), 400, "bad_http_request")
        assert closed_by_server(sock)
