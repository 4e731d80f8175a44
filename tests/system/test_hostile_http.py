"""Hostile clients against a real server on loopback: overload, stalled and abandoned uploads, shutdown.

These speak raw HTTP over a socket, because what matters is what happens before and while a body
arrives: an overloaded server answers 503 before reading a byte of the body, a stalled upload gets a
JSON 408, an abandoned one is a 499 (never a 500) and shutting down does not wait for stalled uploads.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.http_protocol import GuardedHttpProtocol
from app.main import create_app
from app.server import DrainingServer, make_server
from app.settings import Settings
from tests.images import red_png
from tests.servers import free_port, wait_ready


class Live:
    def __init__(self, server: DrainingServer, thread: threading.Thread, port: int) -> None:
        self.server, self.thread, self.port = server, thread, port
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def live(tiny_model_dir: Path) -> Iterator[Callable[..., Live]]:
    started: list[Live] = []

    def start(**overrides: Any) -> Live:
        settings = Settings(model_dir=tiny_model_dir, auto_train=False, **overrides)
        app = create_app(settings)
        port = free_port()
        server = make_server(app, settings, host="127.0.0.1", port=port)  # what `serve` runs
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_ready(f"http://127.0.0.1:{port}", 60)
        started.append(Live(server, thread, port))
        return started[-1]

    yield start
    for running in started:
        running.server.should_exit = True
        running.thread.join(timeout=30)


def partial_upload(port: int, body: bytes, declared: int, content_type: str = "image/png") -> socket.socket:
    """Send the headers of a POST /predict declaring `declared` bytes, then only `body`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (Content-Length framed) from the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return status, headers, body


def metric_lines(url: str, name: str) -> list[str]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith(name)]


def test_overload_is_shed_with_503_before_the_body_is_read(live: Callable[..., Live]) -> None:
    server = live(max_in_flight=1, retry_after_seconds=2)
    holder = partial_upload(server.port, b"\x89PNG", declared=100_000)  # holds the only slot
    try:
        time.sleep(0.3)
        # Headers only, no body at all: the answer cannot have waited for it.
        shed = partial_upload(server.port, b"", declared=100_000)
        status, headers, body = read_response(shed)
        shed.close()
        assert status == 503
        assert headers["retry-after"] == "2"
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] == "overloaded"
        # Operations never shed.
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        assert metric_lines(server.url, "catdog_requests_shed_total") == ["catdog_requests_shed_total 1.0"]
        assert metric_lines(server.url, "catdog_requests_in_flight") == ["catdog_requests_in_flight 1.0"]
    finally:
        holder.close()


def test_stalled_upload_gets_a_json_408_and_the_connection_closes(live: Callable[..., Live]) -> None:
    server = live(body_timeout_seconds=0.5)
    sock = partial_upload(server.port, b"\x89PNG\r\n", declared=50_000)
    status, headers, body = read_response(sock)
    assert status == 408
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "body_timeout"
    assert error["details"] == {"body_timeout_seconds": 0.5}
    assert sock.recv(1) == b""  # closed by the server
    sock.close()


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=xyz"])
def test_abandoned_upload_is_one_info_line_and_status_499(
    live: Callable[..., Live], caplog: pytest.LogCaptureFixture, content_type: str
) -> None:
    server = live()
    caplog.set_level(logging.INFO)
    for _ in range(3):
        sock = partial_upload(server.port, b"--xyz\r\npartial", declared=200_000, content_type=content_type)
        time.sleep(0.2)
        sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counted = [
            line for line in metric_lines(server.url, "catdog_http_requests_total") if "/predict" in line
        ]
        if any('status="499"' in line and line.endswith(" 3.0") for line in counted):
            break
        time.sleep(0.1)
    assert any('status="499"' in line and line.endswith(" 3.0") for line in counted), counted
    assert not any('status="500"' in line for line in counted), counted
    disconnects = [r for r in caplog.records if r.getMessage().startswith("client disconnected")]
    assert len(disconnects) == 3
    assert all(r.levelno == logging.INFO and not r.exc_info for r in disconnects)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    access = [r for r in caplog.records if r.name == "catdog.access" and getattr(r, "path", "") == "/predict"]
    assert [getattr(r, "status", None) for r in access] == [499, 499, 499]


def test_work_for_a_client_that_left_is_abandoned(
    live: Callable[..., Live], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends its image and leaves while the image waits for the decode budget frees its
    slot at once (499), instead of having it decoded and inferred for nobody once the budget frees."""
    server = live()
    caplog.set_level(logging.INFO)
    service = server.server.config.app.state.service.require_ready()
    budget = service.decoder.budget
    assert budget.try_take(budget.capacity)  # the whole budget, as a long decode would hold it
    try:
        image = red_png()
        sock = partial_upload(server.port, image, declared=len(image))
        deadline = time.monotonic() + 30
        while not budget._waiters:  # its image is queued for the budget
            assert time.monotonic() < deadline, "the upload never queued for the decode budget"
            time.sleep(0.01)
        sock.close()
        while metric_lines(server.url, "catdog_requests_in_flight") != ["catdog_requests_in_flight 0.0"]:
            assert time.monotonic() < deadline, "the request of the client that left stayed in flight"
            time.sleep(0.02)
        assert not budget._waiters
    finally:
        budget.release_from_thread(budget.capacity, service.batcher._worker.get_loop())
    abandoned = [r for r in caplog.records if "was abandoned" in r.getMessage()]
    assert len(abandoned) == 1 and abandoned[0].levelno == logging.INFO
    access = [r for r in caplog.records if r.name == "catdog.access" and getattr(r, "path", "") == "/predict"]
    assert [getattr(r, "status", None) for r in access] == [499]


def test_shutdown_answers_a_stalled_upload_with_503_and_does_not_wait_for_it(
    live: Callable[..., Live], caplog: pytest.LogCaptureFixture
) -> None:
    server = live(body_timeout_seconds=120, shutdown_timeout_seconds=30)
    sock = partial_upload(server.port, b"\x89PNG\r\n", declared=50_000)
    time.sleep(0.3)
    server.server.should_exit = True
    status, headers, body = read_response(sock)
    sock.close()
    server.thread.join(timeout=20)
    assert not server.thread.is_alive()  # not the 120 s body timeout, nor the 30 s grace period
    assert status == 503
    assert json.loads(body)["error"]["code"] == "shutting_down"
    assert "retry-after" in headers
    assert "Exception in ASGI application" not in caplog.text


def test_serve_caps_connections_and_bounds_the_graceful_shutdown(tiny_model_dir: Path) -> None:
    settings = Settings(model_dir=tiny_model_dir, max_connections=7, shutdown_timeout_seconds=3)
    app = create_app(settings)
    server = make_server(app, settings)  # what `python -m app serve` runs
    assert server.config.limit_concurrency is None  # our protocol caps connections instead
    protocol = server.config.http
    assert isinstance(protocol, type) and issubclass(protocol, GuardedHttpProtocol)
    assert protocol.book.limits.max_connections == 7
    assert server.config.timeout_graceful_shutdown == 3
    assert server.admission is app.state.admission
