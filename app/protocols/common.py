"""What both protocols share: the served model's name and readiness, reading and checking bodies.

Their errors are app/errors.py's, raised like any other; the fronts (app/fronts.py) render them as
`{"error": "..."}` with the status codes and `Retry-After` of /predict (400, 413, 503, ...).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi import Request
from pydantic import BaseModel

from app.errors import (
    APIError,
    InvalidRequestError,
    ModelNotFoundError,
    TooLargeError,
    UnknownVersionError,
)
from app.model_versions import LiveVersion
from app.service import EncodedImage, Prediction, PredictionService, ServiceState
from app.settings import Settings
from catdog.repository import MODEL_NAME, version_of

# Both protocols number versions, as TF Serving and Triton do: the repository's version folders, or 1
# for a single export (its descriptive version is in /metadata, and V2 model metadata's `parameters`).
MODEL_VERSION = "1"  # for the documentation's examples

# A real 8x8 PNG in base64, for the documentation's request examples (Swagger UI's "Try it out"
# and schemathesis send them as they are).
EXAMPLE_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mM8UWHDgA0wMeAAg1MCAC2LAYx3v6XkAAAAAElFTkSuQmCC"
)


def ready_service(request: Request, version: str | None = None) -> PredictionService:
    """The service answering with `version` (None: the default); 503 until ready, 404
    `UnknownVersionError` when that version is not loaded (`version_not_found` gives it the protocol's
    message)."""
    state: ServiceState = request.app.state.service
    return state.require_ready(version)


@contextmanager
def serving(request: Request, version: str | None) -> Iterator[PredictionService]:
    """`ready_service`, holding the version until the block ends (app/model_versions.py: a version being
    swapped out finishes the requests it took)."""
    state: ServiceState = request.app.state.service
    with state.serve(version) as service:
        yield service


def loaded_versions(request: Request) -> list[LiveVersion]:
    state: ServiceState = request.app.state.service
    return [] if state.versions is None else state.versions.available()


def check_model(name: str, version: str | None, what: str) -> None:
    """404 unless `name` is the served model and `version`, when given, is a version number."""
    if name != MODEL_NAME:
        raise ModelNotFoundError(f"{what} not found: '{name}' (this server serves '{MODEL_NAME}')")
    if version is not None and version_of(version) is None:
        raise UnknownVersionError(f"{what} not found: '{name}' version '{version}' (versions are numbers)")


@contextmanager
def version_not_found(message: str, detail: bool = True) -> Iterator[None]:
    """The service's `UnknownVersionError` from the block, with this protocol's 404 `message` instead
    (followed by the service's, which says what is loaded, when `detail`)."""
    try:
        yield
    except UnknownVersionError as exc:
        raise UnknownVersionError(f"{message} ({exc.message})" if detail else message) from None


async def read_body(request: Request, max_bytes: int) -> bytearray:
    """The request body, inflated as it arrives when it came with `Content-Encoding: gzip` or `deflate`
    (what tritonclient's `request_compression_algorithm` sends); 413 as soon as it passes `max_bytes`."""
    encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise APIError(
            415,
            "unsupported_content_encoding",
            f"unsupported Content-Encoding '{encoding}': send identity, gzip or deflate",
        )
    inflater = None if encoding == "identity" else zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    body = bytearray()
    async for chunk in request.stream():
        if inflater is None:
            body += chunk
        elif chunk and not inflater.eof:
            # A 64 KB chunk can inflate to 64 MB: in a worker thread (zlib lets go of the GIL while it
            # inflates), a step at a time, straight into the body.
            await asyncio.to_thread(_inflate_into, body, inflater, chunk, max_bytes, encoding)
        if len(body) > max_bytes:
            what = "request body" if inflater is None else "inflated request body"
            raise TooLargeError("payload_too_large", f"the {what} is over the limit of {max_bytes} bytes")
    if inflater is not None and not inflater.eof:
        raise InvalidRequestError(f"the {encoding} body is truncated")
    return body


_INFLATE_STEP = 1024 * 1024


def _inflate_into(
    body: bytearray, inflater: zlib._Decompress, chunk: bytes, max_bytes: int, encoding: str
) -> None:
    """Append what `chunk` inflates to, stopping one byte past `max_bytes`."""
    data = chunk
    while len(body) <= max_bytes:
        step = min(_INFLATE_STEP, max_bytes + 1 - len(body))
        try:
            output = inflater.decompress(data, step)
        except zlib.error as exc:
            raise InvalidRequestError(f"the {encoding} body cannot be inflated: {exc}") from exc
        body += output
        data = inflater.unconsumed_tail
        # A full step may leave output inside zlib even with the input all consumed: ask again.
        if not data and len(output) < step:
            return


# Numbers in JSON tensors cost ~8-24 bytes each once parsed (a Python list, then an array), against 2-4
# bytes on the wire: a body of small integers at the size limit would take a gigabyte to parse. This
# many values is 26 images at 224x224x3; bigger pixel tensors go as binary data (V2) or encoded images.
MAX_JSON_VALUES = 4_000_000
# A valid request nests at most 7 levels (a V2 pixel tensor [N][H][W][3] inside the request, `inputs`
# and the input). The parsers recurse once per level, and 1000 levels exhaust Python's recursion limit.
MAX_JSON_DEPTH = 64

_STRUCTURE = b'[]{}"'
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in _STRUCTURE)
_LEVEL_STEP = np.zeros(256, dtype=np.int8)
_LEVEL_STEP[list(b"[{")] = 1
_LEVEL_STEP[list(b"]}")] = -1
_DEPTH_CHUNK = 1 << 20


def json_arrays_limit(max_images: int) -> int:
    """Most arrays a valid request holds: pixels nested [N][H][W][3] are 1 + N + N*H + N*H*W arrays for
    3*N*H*W values (so under 2/3 of MAX_JSON_VALUES, plus one per image), and a few wrappers."""
    return 2 * (MAX_JSON_VALUES + 1) // 3 + max_images + 16


def check_json_structure(
    document: bytes | bytearray, max_objects: int, max_images: int, objects_status: int = 413
) -> None:
    """Refuse a JSON document before parsing it when it holds more values, objects or arrays than a
    request of `max_images` images needs (413; `objects_status` for objects: 400 where no valid
    request of any size has that many), or nests deeper than MAX_JSON_DEPTH (400).

    Parsing holds the GIL for as long as it runs, even in a worker thread, and each parsed object
    costs 50-300 bytes: these counts (C-speed scans of the bytes) are what keep a small compressed body
    from stalling the event loop and taking a gigabyte. Brackets and commas inside strings count too;
    base64 has none.
    """
    if document.count(b",") > MAX_JSON_VALUES:
        raise TooLargeError(
            "payload_too_large",
            f"the JSON body holds more than {MAX_JSON_VALUES} values: send pixel tensors as binary data "
            "(V2) or images as encoded bytes",
        )
    objects = document.count(b"{")
    if objects > max_objects:
        message = (
            f"the JSON body holds {objects} objects, more than a request of at most {max_images} images "
            f"needs ({max_objects})"
        )
        raise (
            InvalidRequestError(message)
            if objects_status == 400
            else TooLargeError("payload_too_large", message)
        )
    arrays = document.count(b"[")
    max_arrays = json_arrays_limit(max_images)
    if arrays > max_arrays:
        raise TooLargeError(
            "payload_too_large",
            f"the JSON body holds {arrays} arrays, more than a request of at most {max_images} images "
            f"needs ({max_arrays})",
        )
    if objects + arrays > MAX_JSON_DEPTH and _json_depth(document) > MAX_JSON_DEPTH:
        raise InvalidRequestError(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")


def _json_depth(document: bytes | bytearray) -> int:
    """How deep a JSON document nests, from its brackets outside strings (C-speed passes only)."""
    text = document
    # Escaped backslashes first, then escaped quotes: the quotes left are the strings' own.
    for escape in (b"\\\\", b'\\"'):
        if escape in text:
            text = text.replace(escape, b"")
    codes = np.frombuffer(text.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    level = deepest = 0
    in_string = 0
    for start in range(0, codes.size, _DEPTH_CHUNK):  # in slices: bounded temporary arrays
        part = codes[start : start + _DEPTH_CHUNK]
        quotes = np.cumsum(part == ord('"'), dtype=np.int32)
        steps = np.where((quotes & 1) == in_string, _LEVEL_STEP[part], 0)
        levels = np.cumsum(steps, dtype=np.int32) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
        in_string ^= int(quotes[-1]) & 1
    return deepest


def body_limit(settings: Settings) -> int:
    """Largest protocol body, on the wire and inflated: a full batch request, base64 included (the
    limit app/fronts.py declares for the inference routes; their handlers apply it to what inflates)."""
    return settings.max_batch_request_bytes * 4 // 3 + 64 * 1024


async def classify(
    service: PredictionService, images: list[bytes] | np.ndarray, started: float, what: str
) -> Prediction:
    """A protocol's input, encoded images or a pixel tensor, through the prediction core. `what`
    names the images in errors (`instances[2]`)."""
    if isinstance(images, np.ndarray):
        return await service.classify_pixels(images, started)
    if not images:
        raise InvalidRequestError(f"{what} holds no images")
    encoded = [EncodedImage(data, f"{what}[{index}]") for index, data in enumerate(images)]
    return await service.classify_many(encoded, started)


def as_uint8_tensor(values: Any, what: str) -> np.ndarray:
    """Nested lists of integers 0..255 -> a uint8 array; 400 for anything else."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"{what} is not a regular nested list of numbers: {exc}") from exc
    if array.dtype == np.bool_ or array.dtype.kind not in "iu":
        if array.size == 0:
            array = array.astype(np.int64)
        else:
            raise InvalidRequestError(f"{what} must hold integers 0..255, got {_kind(array)}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise InvalidRequestError(f"{what} must hold integers 0..255, got values outside that range")
    return array.astype(np.uint8)


def _kind(array: np.ndarray) -> str:
    return {"f": "floats", "U": "strings", "O": "mixed or ragged values", "b": "booleans"}.get(
        array.dtype.kind, str(array.dtype)
    )


_ERROR_DOCS = {
    404: "No such model or version",
    413: "Too many images, or an image over the byte or pixel limit",
    415: "Unsupported Content-Encoding",
    503: "Model not ready, or the queue is full; see Retry-After",
}


def error_docs(
    model: type[BaseModel], codes: tuple[int, ...], bad_request: str
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a protocol route's errors, in the protocol's error `model`; `bad_request`
    describes its 400."""
    text = {400: bad_request, **_ERROR_DOCS}
    return {code: {"model": model, "description": text[code]} for code in codes}


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
