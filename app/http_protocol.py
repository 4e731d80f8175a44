"""The HTTP/1.1 connection layer under the app: header deadline and limits, JSON protocol errors, and a
connection cap counting only connections that do work.

Hand-written because uvicorn 0.54 has no option for any of this on its httptools protocol: nothing
times out a connection that never completes its headers (its keep-alive timer only runs between
requests and any byte cancels it), headers have no size or count limit (h11_max_incomplete_event_size
exists for h11 only, and answers in plain text), a malformed request gets a plain-text 400, and
`limit_concurrency` counts idle connections too, then answers every request, health probes included,
with a plain-text 503. `GuardedHttpProtocol` is a small subclass of uvicorn's HttpToolsProtocol,
passed as `uvicorn.Config(http=...)` (app/server.py), with `limit_concurrency=None`:

  header deadline   a connection must complete a request's line and headers within
                    `header_timeout_s` of connecting or of its previous response completing (a total
                    deadline, so one byte every few seconds does not extend it); then 408
                    `header_timeout` if part of a request arrived, else a plain close
  header limits     more than `max_header_bytes` of request line and headers, or more than
                    `max_header_count` header fields: 431 `headers_too_large`, counted as the bytes
                    arrive, so at most one read (256 KiB) beyond the limit is ever buffered
  malformed HTTP    400 `bad_http_request`
  connection cap    an idle connection (awaiting a request's headers) is closed, oldest first, when a
                    new one would exceed `max_connections`; when more than `max_connections` are doing
                    work, a request gets 503 `overloaded`, except the health probes (HEALTH_PATHS)

Every answer is JSON in app/errors.py's shape, with a request id (X-Request-ID, logged) like the app's.
The 400, 408 and 431 close the connection, after reading and dropping what the client still sends
for up to LINGER_SECONDS, so the kernel does not reset the connection (losing the answer) while the
client is still sending. The closes are counted in `catdog_connections_closed_total{reason}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.errors import error_body, error_response
from app.logs import reset_request_id, set_request_id
from app.middleware import REQUEST_ID_HEADER, SECURITY_HEADERS

logger = logging.getLogger("catdog.http")

# Always served, over the cap too: an orchestrator must not restart a pod for being busy.
HEALTH_PATHS = frozenset({b"/healthz", b"/readyz"})
# Long enough for a client to finish a send in flight and read the answer; bounded, so a client that
# never stops sending cannot keep the connection.
LINGER_SECONDS = 2.0
CLOSE_REASONS = ("header_timeout", "evicted", "headers_too_large", "bad_request")


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int
    header_timeout_s: float
    max_header_bytes: int
    max_header_count: int
    retry_after_s: int


class ConnectionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.closed = Counter(
            "catdog_connections_closed_total",
            "Connections the HTTP layer closed: header deadline, idle connection evicted at the "
            "connection cap, headers too large, malformed HTTP.",
            ("reason",),
            registry=registry,
        )
        for reason in CLOSE_REASONS:
            self.closed.labels(reason)
        self.over_cap = Counter(
            "catdog_connection_cap_refused_total",
            "Requests answered 503 because CATDOG_MAX_CONNECTIONS connections were doing work.",
            registry=registry,
        )


class ConnectionBook:
    """One server's connections: those open (not being closed by us), and the idle ones, oldest first."""

    def __init__(self, limits: HttpLimits, metrics: ConnectionMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.open: set[GuardedHttpProtocol] = set()
        # A dict as an ordered set: insertion order is idle-since order.
        self.idle: dict[GuardedHttpProtocol, None] = {}

    def busy(self) -> int:
        return len(self.open) - len(self.idle)

    def oldest_idle(self, besides: GuardedHttpProtocol) -> GuardedHttpProtocol | None:
        return next((c for c in self.idle if c is not besides), None)


class _HeadersTooLargeError(Exception):
    """Raised in a parser callback to stop parsing; httptools wraps it in HttpParserCallbackError."""


class GuardedHttpProtocol(HttpToolsProtocol):
    book: ClassVar[ConnectionBook]  # one per server: see http_protocol_class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # the next bytes begin a request line
        self._head_bytes = 0  # bytes received while awaiting this request's line and headers
        # Its header names and values as parsed: catches a request that began mid-read, after a body.
        self._parsed_header_bytes = 0
        self._deferred: bytes | None = None  # an error answer waiting for earlier requests' answers
        self._finished = False  # answered or closed by us: further bytes are dropped

    # Connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        book = self.book
        book.open.add(self)
        self._become_idle()
        if len(book.open) > book.limits.max_connections:
            victim = book.oldest_idle(besides=self)
            if victim is not None:
                victim._evict()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def _become_idle(self) -> None:
        self.book.idle.pop(self, None)
        self.book.idle[self] = None
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.book.limits.header_timeout_s, self._head_deadline_passed)

    def _become_busy(self) -> None:
        self.book.idle.pop(self, None)
        self._cancel_deadline()

    def _forget(self) -> None:
        self._cancel_deadline()
        self.book.open.discard(self)
        self.book.idle.pop(self, None)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # Bytes in

    def data_received(self, data: bytes) -> None:
        if self._finished or self._deferred is not None:
            return
        self._unset_keepalive_if_required()
        limit = self.book.limits.max_header_bytes
        view = memoryview(data)
        while view:
            if not self._awaiting_head:
                self._feed(view)
                return
            room = limit - self._head_bytes
            if room <= 0:
                self._headers_too_large()
                return
            # At most `room` bytes reach the parser while the head is incomplete.
            piece, view = view[:room], view[room:]
            self._head_bytes += len(piece)
            if not self._feed(piece):
                return

    def _feed(self, data: memoryview) -> bool:
        """Parse `data`; False once the connection is being answered or closed."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLargeError):
                self._headers_too_large()
            else:
                self._bad_request(str(exc.__context__ or exc))
            return False
        return not (self._finished or self._deferred is not None or self.transport.is_closing())

    def send_400_response(self, msg: str) -> None:
        self._bad_request(msg)

    def _bad_request(self, reason: str) -> None:
        self._refuse(
            400,
            "bad_http_request",
            "the request is not valid HTTP/1.1",
            reason="bad_request",
            details={"reason": reason},
        )

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.book.limits.max_header_bytes:
            raise _HeadersTooLargeError

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._parsed_header_bytes += len(name) + len(value)
        limits = self.book.limits
        if (
            len(self.headers) > limits.max_header_count
            or len(self.url) + self._parsed_header_bytes > limits.max_header_bytes
        ):
            raise _HeadersTooLargeError

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._become_busy()
        app = self.app
        overloaded = self._overloaded_app()
        if overloaded is not None:
            self.app = overloaded  # what uvicorn runs for this request
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        if self._deferred is not None and not self.pipeline and not self.transport.is_closing():
            self.server_state.total_requests += 1
            self._answer_and_close(self._deferred)
            return
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._become_idle()

    # Limits

    def _overloaded_app(self) -> ASGIApp | None:
        """A 503 `overloaded` to run instead of the app when over the cap; None to run the app."""
        limits = self.book.limits
        if self.book.busy() <= limits.max_connections and len(self.tasks) < limits.max_connections:
            return None
        path = httptools.parse_url(self.url).path
        if path in HEALTH_PATHS:
            return None
        self.book.metrics.over_cap.inc()
        request_id = uuid.uuid4().hex
        logger.info(
            "HTTP request over the connection cap",
            extra={"status": 503, "request_id": request_id, "client": (self.client or ("?",))[0]},
        )
        token = set_request_id(request_id)  # for the body's request_id
        try:
            # Keep-alive: once answered, the connection is idle, so the first to go if room is needed.
            return error_response(
                503,
                "overloaded",
                f"the service is at capacity: {limits.max_connections} connections are busy; retry shortly",
                headers={
                    "Retry-After": str(limits.retry_after_s),
                    REQUEST_ID_HEADER: request_id,
                    **dict(SECURITY_HEADERS),
                },
                path=path.decode("latin-1"),
            )
        finally:
            reset_request_id(token)

    def _head_deadline_passed(self) -> None:
        self._deadline = None
        if self._finished or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self._close_quietly("header_timeout")
            return
        timeout = self.book.limits.header_timeout_s
        self._refuse(
            408,
            "header_timeout",
            f"the request line and headers did not arrive within {timeout:g} s",
            reason="header_timeout",
            details={"header_timeout_seconds": timeout},
        )

    def _headers_too_large(self) -> None:
        limits = self.book.limits
        self._refuse(
            431,
            "headers_too_large",
            f"the request line and headers exceed {limits.max_header_bytes} bytes "
            f"or {limits.max_header_count} header fields",
            reason="headers_too_large",
            details={
                "max_header_bytes": limits.max_header_bytes,
                "max_header_count": limits.max_header_count,
            },
        )

    def _evict(self) -> None:
        if self._head_bytes == 0:
            self._close_quietly("evicted")
            return
        self._refuse(
            503,
            "overloaded",
            "the connection was closed to make room for others: it had not sent a whole request",
            reason="evicted",
            headers=(("retry-after", str(self.book.limits.retry_after_s)),),
        )

    # Answers

    def _refuse(
        self,
        status: int,
        code: str,
        message: str,
        *,
        reason: str,
        details: Any = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer `status` as JSON and close; after the answers still owed to earlier requests."""
        self.book.metrics.closed.labels(reason).inc()
        request_id = uuid.uuid4().hex  # below the app's request ids: one of its own, for the logs
        logger.info(
            "HTTP connection refused",
            extra={
                "status": status,
                "reason": reason,
                "request_id": request_id,
                "client": (self.client or ("?",))[0],
            },
        )
        body = {**error_body(code, message, details), "request_id": request_id}
        headers = (*headers, (REQUEST_ID_HEADER, request_id), *SECURITY_HEADERS)
        payload = _json_answer(status, body, [*self.server_state.default_headers, *_encoded(headers)])
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._answer_and_close(payload)
        elif not cycle.more_body:
            # A later request is at fault: the ones before it are answered first.
            self._defer(payload)
        elif self.pipeline:
            # This queued request's own body is at fault: it is never run, and the answer waits
            # for the requests before it.
            if self.pipeline[0][0] is cycle:
                self.pipeline.popleft()
            self._defer(payload)
        elif not cycle.response_started:
            self._answer_and_close(payload)  # this request's own body is at fault
        else:
            self._finish()  # mid-answer to this very request: no room for another answer
            self.transport.close()

    def _defer(self, payload: bytes) -> None:
        self._deferred = payload
        self.flow.pause_reading()

    def _answer_and_close(self, payload: bytes) -> None:
        self._finish()
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app is still reading this request: it sees a disconnect and writes nothing.
            cycle.disconnected = True
            cycle.waiting_for_100_continue = False
            cycle.message_event.set()
        transport.write(payload)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.flow.resume_reading()  # drop what the client still sends until it closes (eof_received)
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def _close_quietly(self, reason: str) -> None:
        self.book.metrics.closed.labels(reason).inc()
        logger.debug("HTTP connection closed", extra={"reason": reason})
        self._finish()
        self.transport.close()

    def _finish(self) -> None:
        self._finished = True
        self._deferred = None
        self._unset_keepalive_if_required()
        self._forget()


def _encoded(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _json_answer(status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> bytes:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    lines = [STATUS_LINE[status]]
    lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
    lines.append(b"content-type: application/json\r\n")
    lines.append(b"content-length: %d\r\n" % len(content))
    lines.append(b"connection: close\r\n\r\n")
    lines.append(content)
    return b"".join(lines)


def http_protocol_class(
    limits: HttpLimits, metrics: ConnectionMetrics | None = None
) -> type[GuardedHttpProtocol]:
    """The protocol class for one server (`uvicorn.Config(http=...)`), sharing one ConnectionBook."""

    class ServerHttpProtocol(GuardedHttpProtocol):
        book = ConnectionBook(limits, metrics or ConnectionMetrics())

    return ServerHttpProtocol
