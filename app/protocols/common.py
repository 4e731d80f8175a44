"""What both protocols share: the served model's name, readiness, and errors as `{"error": "..."}`."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from app.errors import APIError
from app.schemas import BatchPredictionResponse
from app.service import PredictionService, ServiceState
from app.uploads import Upload, check_size

# The name clients address the model by: /v2/models/catdog/infer, /v1/models/catdog:predict.
MODEL_NAME = "catdog"

# A real 8x8 PNG in base64, for the documentation's request examples (Swagger UI's "Try it out"
# and schemathesis send them as they are).
EXAMPLE_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mM8UWHDgA0wMeAAg1MCAC2LAYx3v6XkAAAAAElFTkSuQmCC"
)


class ProtocolError(Exception):
    """An error rendered the way these protocols do: the status code and `{"error": message}`."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


async def answer(call: Callable[[], Awaitable[Response]]) -> Response:
    """Run a protocol handler; every error it meets, ours included, leaves as `{"error": "..."}`.

    Status codes and `Retry-After` are those of /predict (400, 413, 503, ...).
    """
    try:
        return await call()
    except ProtocolError as exc:
        return error_response(exc.status_code, exc.message, exc.headers)
    except APIError as exc:
        return error_response(exc.status_code, exc.message, exc.headers)


def ready_service(request: Request) -> PredictionService:
    state: ServiceState = request.app.state.service
    return state.require_ready()


def check_model(name: str, version: str | None, served_version: str, what: str) -> None:
    """404 unless `name` (and `version`, when given) is the served model."""
    if name != MODEL_NAME:
        raise ProtocolError(404, f"{what} not found: '{name}' (this server serves '{MODEL_NAME}')")
    if version is not None and version != served_version:
        raise ProtocolError(
            404, f"{what} not found: '{name}' version '{version}' (served version: '{served_version}')"
        )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, inflated when it came with `Content-Encoding: gzip` or `deflate` (what
    tritonclient's `request_compression_algorithm` sends), never past `max_bytes`."""
    body = await request.body()
    encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(415, f"unsupported Content-Encoding '{encoding}': send identity, gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise ProtocolError(400, f"the {encoding} body cannot be inflated: {exc}") from exc
    if len(data) > max_bytes:
        raise ProtocolError(413, f"the inflated request body is over the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise ProtocolError(400, f"the {encoding} body is truncated")
    return data


# Numbers in JSON tensors cost ~8-24 bytes each once parsed (a Python list, then an array), against 2-4
# bytes on the wire: a body of small integers at the size limit would take a gigabyte to parse. This
# many values is 26 images at 224x224x3; bigger pixel tensors go as binary data (V2) or encoded images.
MAX_JSON_VALUES = 4_000_000


def check_json_values(document: bytes) -> None:
    """413 before parsing a JSON document with more than MAX_JSON_VALUES list items (counted by commas;
    base64 strings have none)."""
    if document.count(b",") > MAX_JSON_VALUES:
        raise ProtocolError(
            413,
            f"the JSON body holds more than {MAX_JSON_VALUES} values: send pixel tensors as binary data "
            "(V2) or images as encoded bytes",
        )


def body_limit(service: PredictionService) -> int:
    """Largest (inflated) protocol body: a full batch request, base64 included."""
    return service.settings.max_batch_request_bytes * 4 // 3 + 64 * 1024


async def predict_encoded(
    service: PredictionService, images: list[bytes], started: float, what: str
) -> BatchPredictionResponse:
    """Encoded images (JPEG, PNG, ...) through /predict/batch's path: size limits, decode, batcher."""
    limit = service.settings.max_batch_files
    if not images:
        raise ProtocolError(400, f"{what} holds no images")
    if len(images) > limit:
        raise ProtocolError(413, f"{len(images)} images sent, over the limit of {limit}")
    uploads = [
        Upload(f"{what}[{index}]", "application/octet-stream", data) for index, data in enumerate(images)
    ]
    for upload in uploads:
        check_size(upload, service.settings.max_upload_bytes)
    return await service.predict_batch(uploads, started)


def as_uint8_tensor(values: Any, what: str) -> np.ndarray:
    """Nested lists of integers 0..255 -> a uint8 array; 400 for anything else."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(400, f"{what} is not a regular nested list of numbers: {exc}") from exc
    if array.dtype == np.bool_ or array.dtype.kind not in "iu":
        if array.size == 0:
            array = array.astype(np.int64)
        else:
            raise ProtocolError(400, f"{what} must hold integers 0..255, got {_kind(array)}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise ProtocolError(400, f"{what} must hold integers 0..255, got values outside that range")
    return array.astype(np.uint8)


def _kind(array: np.ndarray) -> str:
    return {"f": "floats", "U": "strings", "O": "mixed or ragged values", "b": "booleans"}.get(
        array.dtype.kind, str(array.dtype)
    )


def probabilities_matrix(response: BatchPredictionResponse, class_names: list[str]) -> list[list[float]]:
    return [[item.probabilities[name] for name in class_names] for item in response.predictions]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` substituted in place, for `openapi_extra` request bodies
    (FastAPI does not register the models those mention, so a `$ref` there would point nowhere)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
