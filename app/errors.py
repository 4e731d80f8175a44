"""One JSON error shape for every failure: {"error": {"code", "message", "details"?}, "request_id"}.

The exception is the paths of the protocols other clients speak (app/protocols: KServe V2 under /v2,
TF Serving under /v1/models/): their clients read `{"error": "<message>"}`, so every error on those
paths has that shape, those raised before a protocol handler runs (size limit, admission, routing)
included.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match

from app.logs import current_request_id

logger = logging.getLogger("catdog.errors")


class APIError(Exception):
    """An error the client can act on; rendered as JSON with its own status code."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error, "request_id": current_request_id()}


def speaks_protocol(path: str) -> bool:
    """Is `path` a KServe V2 or TF Serving route, whose clients expect `{"error": "<message>"}`?"""
    return path == "/v2" or path.startswith(("/v2/", "/v1/models/"))


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
    *,
    path: str | None = None,
) -> JSONResponse:
    """The error as JSON; `path`: the request's, so a protocol route gets its protocol's shape."""
    if path is not None and speaks_protocol(path):
        return JSONResponse({"error": message}, status_code=status_code, headers=headers)
    return JSONResponse(error_body(code, message, details), status_code=status_code, headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}

# nginx's convention for "the client closed the connection before the answer": what the access log
# and the request metrics record for an abandoned upload. Nobody receives it.
CLIENT_CLOSED_REQUEST = 499


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route takes at this path: Starlette's 405 names only the first route's,
    and a path can have one route per method (/v2/repository/index: GET and POST)."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(
            exc.status_code, exc.code, exc.message, exc.details, exc.headers, path=request.url.path
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"location": list(err.get("loc", ())), "message": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        return error_response(
            422,
            "validation_error",
            "the request is missing or has invalid fields",
            details,
            path=request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(app, request)}
        return error_response(exc.status_code, code, str(exc.detail), headers=headers, path=request.url.path)

    @app.exception_handler(ClientDisconnect)
    async def _client_disconnect(request: Request, _: ClientDisconnect) -> Response:
        # Not a server error: one INFO line, status 499 in the access log and the metrics.
        logger.info(
            "client disconnected before the request was read",
            extra={"method": request.method, "path": request.url.path},
        )
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the traceback for operators; the client gets no internals.
        logger.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal server error", path=request.url.path)
