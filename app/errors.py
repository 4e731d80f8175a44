"""One error model for every front: `APIError` and its domain subclasses, rendered in the shape of
the front that owns the request's path (app/fronts.py).

The HTTP API's shape is `{"error": {"code", "message", "details"?}, "request_id"}`; the protocols
other clients speak (KServe V2 under /v2, TF Serving under /v1/models/) answer `{"error": "<message>"}`.
Every error on a front's paths has its shape, those raised before a handler runs (size limit,
admission, routing, 405, 422) included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path

from app.logs import current_request_id

logger = logging.getLogger("catdog.errors")


class APIError(Exception):
    """An error the client can act on: its status code, a stable `code`, a message, optional details
    and headers (Retry-After, ...). Each front renders it in its own shape."""

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


# --- what the service raises, whichever front the request came in by ----------------------------


class InvalidRequestError(APIError):
    """400 `invalid_request`: a request the service cannot use (bad JSON, tensor, base64, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "invalid_request", message)


class InvalidImageError(APIError):
    """400: bytes that are no image the service decodes, or none at all."""

    def __init__(self, code: Literal["undecodable_image", "empty_image"], message: str) -> None:
        super().__init__(400, code, message)


class TooLargeError(APIError):
    """413: an image over the pixel or decode-memory limit, or bytes over a size limit."""

    def __init__(
        self, code: Literal["image_too_large", "payload_too_large"], message: str, details: Any = None
    ) -> None:
        super().__init__(413, code, message, details)


def image_bytes_too_large(name: str | None, size: int, limit: int) -> TooLargeError:
    """413 `payload_too_large` for one image over CATDOG_MAX_UPLOAD_BYTES, naming it."""
    shown = f"'{name}'" if name else "the image"
    return TooLargeError(
        "payload_too_large",
        f"{shown} is {size} bytes, over the limit of {limit} bytes",
        {"max_upload_bytes": limit},
    )


class TooManyFilesError(APIError):
    """413 `too_many_files`: more images in one request than CATDOG_MAX_BATCH_FILES."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            413, "too_many_files", f"{count} images sent, over the limit of {limit}", {"max_files": limit}
        )


class ModelNotFoundError(APIError):
    """404 `model_not_found`: a protocol request names a model this server does not serve."""

    def __init__(self, message: str) -> None:
        super().__init__(404, "model_not_found", message)


class UnknownVersionError(APIError):
    """404 `version_not_found`: no such model version or label is loaded."""

    def __init__(self, message: str) -> None:
        super().__init__(404, "version_not_found", message)


class RetryLaterError(APIError):
    """A 503 with `Retry-After`: the client should come back in `retry_after_s` seconds."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(503, code, message, headers={"Retry-After": str(retry_after_s)})


class OverloadedError(RetryLaterError):
    """503 `overloaded`: at capacity (the batcher's queue is full)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__("overloaded", message, retry_after_s)


class ServiceNotReadyError(RetryLaterError):
    """503 `not_ready`: no model loaded and warmed up yet, or shutting down."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__("not_ready", message, retry_after_s)


class InferenceFailedError(APIError):
    """500 `inference_failed`: the model call failed; the model's own error is not leaked."""

    def __init__(self) -> None:
        super().__init__(500, "inference_failed", "the model failed on this request")


# --- rendering --------------------------------------------------------------------------------------


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The HTTP API's shape."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error, "request_id": current_request_id()}


def render(error: APIError, path: str | None = None) -> JSONResponse:
    """`error` as JSON in the shape of the front that owns `path` (the HTTP API's without one)."""
    from app.fronts import front_of  # the fronts' routers import this module

    body = (
        error_body(error.code, error.message, error.details)
        if path is None
        else front_of(path).error_body(error)
    )
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
    *,
    path: str | None = None,
) -> JSONResponse:
    """The error as JSON; `path`: the request's, so each front's paths get its shape."""
    return render(APIError(status_code, code, message, details, dict(headers) if headers else None), path)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}

# nginx's convention for "the client closed the connection before the answer": what the access log
# and the request metrics record for an abandoned upload. Nobody receives it.
CLIENT_CLOSED_REQUEST = 499


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """The methods documented for this path's template: Starlette's 405 names only the first matching
    route's, and a template can have one route per method (/v2/repository/index: GET and POST). Where
    several templates match (`/v1/models/{name}` also matches `catdog:predict`), the most literal one."""
    path = request.url.path
    matching = [
        (sum(len(part) for part in re.split(r"{[^}]*}", template)), operations)
        for template, operations in app.openapi().get("paths", {}).items()
        if compile_path(template)[0].match(path)
    ]
    if not matching:
        return ""
    methods = {method.upper() for method in max(matching, key=lambda entry: entry[0])[1]}
    if "GET" in methods:
        methods.add("HEAD")  # answered on every GET route (app/admission.py)
    return ", ".join(method for method in _METHODS if method in methods)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return render(exc, request.url.path)

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
