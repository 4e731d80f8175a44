"""The fronts the service answers on, each declared once: its paths, routers, body limits, error shape.

- the HTTP API: /predict, /predict/batch, the operations routes, the web page and everything no other
  front owns; errors `{"error": {"code", "message", "details"?}, "request_id"}`
- KServe V2 (app/protocols/v2.py, and its model repository extension, app/protocols/repository.py)
  under /v2, and TF Serving (app/protocols/tfserving.py) under /v1/models/; errors `{"error": "..."}`

What reads this: app/main.py includes the routers; BodySizeLimitMiddleware (app/middleware.py) refuses
a body over its path's limit; app/errors.py renders every error in the shape of its path's front, those
raised before a handler runs (size limit, admission, routing, 405, 422) included; app/openapi.py leaves
FastAPI's 422 out of the routes of fronts that never send it. A new front is one more entry here.

A declared path ending in "/" covers every path under it; any other covers that path (trailing slashes
aside). Where several cover a path the longest wins: the HTTP API's "/" takes what no other front does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter

from app import routes, web
from app.errors import APIError, error_body
from app.protocols import common, repository, tfserving, v2
from app.settings import Settings

# Every path no front gives a limit of its own: the operations routes, the web page, GETs.
DEFAULT_BODY_LIMIT = 1024 * 1024
# Room for multipart boundaries and part headers on top of the image bytes.
MULTIPART_OVERHEAD = 64 * 1024

BodyLimit = Callable[[Settings], int]
ErrorShape = Callable[[APIError], dict[str, Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class Front:
    """A way into the service: the paths it owns, the routers serving them, how its errors look."""

    name: str
    paths: tuple[str, ...]
    routers: tuple[APIRouter, ...]
    error_body: ErrorShape
    # The largest request body, by path (declared as `paths` are); DEFAULT_BODY_LIMIT for the others.
    body_limits: tuple[tuple[str, BodyLimit], ...] = ()
    # Whether its routes can answer FastAPI's 422 `validation_error`; if not, OpenAPI does not list it.
    sends_validation_errors: bool = True

    def body_limit(self, settings: Settings, path: str) -> int:
        limit = _most_specific(path, self.body_limits)
        return DEFAULT_BODY_LIMIT if limit is None else limit(settings)


def _covers(declared: str, path: str) -> bool:
    if declared.endswith("/"):
        return path.startswith(declared)
    return (path.rstrip("/") or "/") == declared


def _most_specific(path: str, declarations: tuple[tuple[str, T], ...]) -> T | None:
    best: tuple[str, T] | None = None
    for declared, value in declarations:
        if _covers(declared, path) and (best is None or len(declared) > len(best[0])):
            best = (declared, value)
    return None if best is None else best[1]


def _api_error_body(error: APIError) -> dict[str, Any]:
    return error_body(error.code, error.message, error.details)


def _protocol_error_body(error: APIError) -> dict[str, Any]:
    """KServe V2's and TF Serving's: the message only; the status code says the rest."""
    return {"error": error.message}


HTTP_API = Front(
    name="http",
    paths=("/",),
    routers=(routes.router, web.router),
    error_body=_api_error_body,
    body_limits=(
        ("/predict", lambda settings: settings.max_upload_bytes + MULTIPART_OVERHEAD),
        ("/predict/batch", lambda settings: settings.max_batch_request_bytes + MULTIPART_OVERHEAD),
    ),
)
KSERVE_V2 = Front(
    name="kserve-v2",
    paths=("/v2", "/v2/"),
    routers=(v2.router, repository.router),
    error_body=_protocol_error_body,
    body_limits=(
        ("/v2/models/", common.body_limit),
        ("/v2/repository/", lambda _: repository.MAX_CONTROL_BODY),
    ),
    sends_validation_errors=False,
)
TF_SERVING = Front(
    name="tfserving",
    paths=("/v1/models/",),
    routers=(tfserving.router,),
    error_body=_protocol_error_body,
    body_limits=(("/v1/models/", common.body_limit),),
    sends_validation_errors=False,
)

FRONTS: tuple[Front, ...] = (HTTP_API, KSERVE_V2, TF_SERVING)


def front_of(path: str) -> Front:
    """The front that owns `path` (the HTTP API unless another declares it)."""
    owners = tuple((declared, front) for front in FRONTS for declared in front.paths)
    return _most_specific(path, owners) or HTTP_API


def body_limit(settings: Settings, path: str) -> int:
    """The largest request body `path` takes: what BodySizeLimitMiddleware lets through."""
    return front_of(path).body_limit(settings, path)
