"""What /docs and /openapi.json say: the description, each route's documentation, Swagger UI.

Routes take their documentation from here (`@router.post("/predict", **PREDICT)`), so app/routes.py
holds only handlers. Swagger UI is served from this service itself: FastAPI's default /docs page
loads it from a public CDN, so it is blank wherever the browser cannot reach the internet
(air-gapped clusters, this project's CI). The assets come from the swagger-ui-bundle-v2 package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from app.schemas import (
    BatchPredictionResponse,
    ErrorResponse,
    Health,
    PredictionResponse,
    Readiness,
)
from catdog.contract import ModelMetadata

TITLE = "catdog"
VERSION = "1.0.0"
SUMMARY = "Cat-vs-dog image classification"
DESCRIPTION = """
Classifies photos as **cat** or **dog**.

Try it: open `POST /predict`, press *Try it out*, choose a photo for `file` and *Execute*.
From a shell: `curl -F file=@cat.jpg http://localhost:8000/predict`, or send the bytes directly:
`curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' http://localhost:8000/predict`.

Models with a "pet" head also answer `pet_score`, the probability that the photo shows a cat or a
dog at all, and `is_cat_or_dog` (`pet_score` at or above the configured threshold); both are
`null` for models without it. `label` and `probabilities` are always the cat-vs-dog answer.

No answer claims certainty: every probability, `confidence` and `pet_score`, in every protocol, lies
within [0.000001, 0.999999] (clipped there, then rounded to 6 decimals).

Other clients' protocols, on the same decoding, limits and batcher: KServe's **Open Inference
Protocol (V2)** under `/v2` (Triton clients work, binary data included) and **TensorFlow Serving's
REST API** under `/v1/models/catdog`; their errors are the protocols' own `{"error": "..."}`. The
web page at `/` classifies dropped photos; `catdog predict PHOTO...` and `catdog.client` are the
command-line and Python clients.

Every error is JSON: `{"error": {"code", "message", "details"}, "request_id"}`. Every `GET` route
also answers `HEAD` (headers only), e.g. `HEAD /healthz` for load balancers.
"""

ASSETS_URL = "/static/swagger-ui"

# --- request bodies: the handlers read the request themselves (app/uploads.py), so FastAPI cannot
# --- infer these; they are declared for the documentation only.

_FILE_SCHEMA = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
_RAW_IMAGE = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Either a multipart form with the image in `file` (what Swagger UI and "
        "`curl -F file=@cat.jpg` send), or the raw image bytes with an image content type.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": _FILE_SCHEMA}}
            },
            "image/jpeg": _RAW_IMAGE,
            "image/png": _RAW_IMAGE,
            "image/webp": _RAW_IMAGE,
            "application/octet-stream": _RAW_IMAGE,
        },
    }
}
MAX_VERSION_LENGTH = 64
VERSION_DESCRIPTION = "The model version (a number) or label to answer with; default: the default version"
# The prediction routes read `version` themselves (app/routes.py pinned_version); declared here for
# the schema, as FastAPI would.
_VERSION_PARAMETER: dict[str, Any] = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": VERSION_DESCRIPTION,
    "schema": {
        "anyOf": [{"type": "string", "maxLength": MAX_VERSION_LENGTH}, {"type": "null"}],
        "description": VERSION_DESCRIPTION,
        "examples": ["1"],
        "title": "Version",
    },
    "example": "1",
}
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": _FILE_SCHEMA, "minItems": 1}},
                }
            }
        },
    }
}


def _error_doc(description: str, code: str, message: str) -> dict[str, Any]:
    example = {"error": {"code": code, "message": message}, "request_id": "4f1c2a9e8b7d4e0f9a6b5c4d3e2f1a0b"}
    return {
        "model": ErrorResponse,
        "description": description,
        "content": {"application/json": {"example": example}},
    }


_PREDICTION_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error_doc(
        "Empty, corrupt or undecodable image",
        "undecodable_image",
        "'cat.jpg': the upload is not a decodable image; supported formats: JPEG, PNG, GIF, WEBP, BMP, TIFF",
    ),
    404: _error_doc(
        "`version` names a version or label that is not loaded",
        "version_not_found",
        "version 7 is not loaded (loaded: [2, 3])",
    ),
    408: _error_doc(
        "The request body did not arrive within CATDOG_BODY_TIMEOUT_SECONDS",
        "body_timeout",
        "the request body did not arrive within 60 s",
    ),
    413: _error_doc(
        "Upload over the byte, pixel or decode-memory limit, or too many files",
        "payload_too_large",
        "'cat.jpg' is 12582912 bytes, over the limit of 10485760 bytes",
    ),
    415: _error_doc(
        "Not an image content type we read",
        "unsupported_media_type",
        "file 'notes.txt' has content type 'text/plain', which is not a supported image type",
    ),
    422: _error_doc("Missing form field", "validation_error", "multipart field 'file' is missing"),
    503: _error_doc(
        "At capacity (CATDOG_MAX_IN_FLIGHT requests, or a full queue), not ready, or shutting down; "
        "see Retry-After",
        "overloaded",
        "the service is at capacity: 64 requests in flight; retry shortly",
    ),
}

# --- per route: keyword arguments of the route decorators ---------------------------------------

PREDICT: dict[str, Any] = {
    "response_model": PredictionResponse,
    "responses": _PREDICTION_ERRORS,
    "openapi_extra": {**_PREDICT_BODY, "parameters": [_VERSION_PARAMETER]},
    "summary": "Classify one image as cat or dog",
    "tags": ["prediction"],
}
PREDICT_BATCH: dict[str, Any] = {
    "response_model": BatchPredictionResponse,
    "responses": _PREDICTION_ERRORS,
    "openapi_extra": {**_BATCH_BODY, "parameters": [_VERSION_PARAMETER]},
    "summary": "Classify several images in one request",
    "tags": ["prediction"],
}
HEALTHZ: dict[str, Any] = {"response_model": Health, "tags": ["operations"], "summary": "Liveness"}
READYZ: dict[str, Any] = {
    "response_model": Readiness,
    "responses": {503: {"model": ErrorResponse, "description": "Not ready"}},
    "tags": ["operations"],
    "summary": "Readiness: model loaded, warmed up, batcher running",
}
METADATA: dict[str, Any] = {
    "tags": ["operations"],
    "summary": "The model's metadata.json, as validated at load time, and how it is served",
    "description": "metadata.json of the default version (or of `version`), plus `serving`: the "
    "repository version, the runtime answering (`litert-int8`, ...), the pet_score threshold in force "
    "for it and where that threshold comes from; and `repository`: the version policy, labels, and "
    "every version seen with its state and memory.",
    "responses": {
        200: {"model": ModelMetadata, "description": "metadata.json of the served model"},
        404: _error_doc("No such version or label loaded", "version_not_found", "version 7 is not loaded"),
        422: _error_doc("Invalid `version`", "validation_error", "query parameter 'version': too long"),
        503: {"model": ErrorResponse, "description": "Not ready"},
    },
}
METRICS: dict[str, Any] = {"tags": ["operations"], "summary": "Prometheus metrics"}


def install_schema(app: FastAPI, sends_validation_errors: Callable[[str], bool]) -> None:
    """/openapi.json without the 422 `{"detail": ...}` FastAPI adds to every route with parameters, on
    the paths where `sends_validation_errors(path)` is false: the fronts of app/fronts.py that declare
    so (the protocols: their handlers read the body themselves, their path parameters are plain
    strings, and their errors are documented per route)."""

    generate = app.openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for path, operations in document.get("paths", {}).items():
                if not sends_validation_errors(path):
                    for operation in operations.values():
                        operation.get("responses", {}).pop("422", None)
            _drop_unreferenced(document, ("HTTPValidationError", "ValidationError"))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def _drop_unreferenced(document: dict[str, Any], names: tuple[str, ...]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    for name in names:
        reference = f'"#/components/schemas/{name}"'
        rest = {key: value for key, value in schemas.items() if key != name}
        if name in schemas and reference not in json.dumps([document.get("paths"), rest]):
            del schemas[name]


def install_docs(app: FastAPI) -> None:
    """Mount the assets and serve /docs; create the app with docs_url=None and redoc_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url="data:,",  # no request leaves the service
    ).body
    headers = {"Content-Security-Policy": docs_content_security_policy(bytes(page))}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)


def docs_content_security_policy(page: bytes) -> str:
    """What /docs may load: its own assets and API only. The page's one inline script (FastAPI's
    SwaggerUIBundle call) is allowed by its hash; Swagger UI sets inline style attributes, which
    CSP cannot allow by hash, hence 'unsafe-inline' for styles (no script can be injected through it)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in re.findall(rb"<script>(.*?)</script>", page, flags=re.DOTALL)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
