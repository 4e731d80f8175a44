"""ASGI middleware: request ids, security headers and access logs for every request; body limits.

(Request metrics come from prometheus-fastapi-instrumentator, installed by app/metrics.py.)
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import TooLargeError, error_response
from app.logs import set_request_id

access_logger = logging.getLogger("catdog.access")

REQUEST_ID_HEADER = "x-request-id"
# On every response: no content sniffing (an upload echoed in an error is never run as HTML), and
# no page of the service inside another site's frame. The HTML pages add their own CSP.
SECURITY_HEADERS = (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"))
_SECURITY_HEADERS_RAW = tuple((name.encode(), value.encode()) for name, value in SECURITY_HEADERS)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Give each request an id (the client's X-Request-ID if sane), echo it, and log the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        # Left set on purpose: uvicorn runs each request in its own task (its own context), and a 500
        # rendered outside this middleware should still carry the id.
        set_request_id(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                headers.extend(_SECURITY_HEADERS_RAW)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            access_logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or ("?",))[0],
                },
            )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None


_KNOWN_PATHS = 1024


class HeadAsGetMiddleware:
    """HEAD on every GET route, answered as GET: FastAPI's GET routes do not take HEAD by themselves.
    uvicorn keeps its own scope (method HEAD) and sends no body; the middleware outside this one,
    the access log and the metrics, still see HEAD."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuse request bodies over their path's limit (app/fronts.py) before they are read into memory
    or spooled.

    A declared Content-Length over the limit is answered at once; a chunked body is counted as it
    streams and cut off when it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit_of: Callable[[str], int]) -> None:
        """`limit_of(path)`: the largest body that path takes (app.fronts.body_limit, for the app)."""
        self.app = app
        self.limit_of = limit_of
        # The registry is fixed once the app is built: each path's limit is looked up once. Bounded,
        # so paths made up by clients cannot grow it.
        self._known: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self._known.get(path)
        if limit is None:
            limit = self.limit_of(path)
            if len(self._known) < _KNOWN_PATHS:
                self._known[path] = limit
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = error_response(
                413,
                "payload_too_large",
                f"request body of {declared} bytes is over the limit of {limit} bytes for this endpoint",
                # The client may still be sending; tell it the connection will not be reused.
                headers={"Connection": "close"},
                path=path,
            )
            await response(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLargeError(
                        "payload_too_large",
                        f"request body is over the limit of {limit} bytes for this endpoint",
                    )
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
