"""KServe's Open Inference Protocol (V2, Triton's HTTP/REST protocol), on the /predict service.

Routes: `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}[/versions/{v}]`,
`.../ready`, and `POST .../infer`. One model, `catdog`; its versions are the repository's (1 for a single
export), as on the TF Serving routes; without `/versions/{v}` the default version answers. A
version's own descriptive version is in the model metadata's `parameters`.

Inputs (one per request):
- `image`, BYTES, shape [N] (or any shape of N elements): encoded images (JPEG, PNG, ...). In JSON
  each element is the image's base64; with the binary-data extension each element is the raw bytes,
  serialized as Triton does (4-byte little-endian length, then the bytes).
- `pixels`, UINT8, shape [N, H, W, 3]: RGB pixels the caller decoded itself, any H and W (squashed to
  the model's input size like decoded uploads); JSON data flat or nested, row-major.

Outputs: `probabilities` FP32 [N, C] (C = class names, metadata order), `label` BYTES [N], and for
models with a pet head `pet_score` FP32 [N] and `is_cat_or_dog` BOOL [N]. Each is JSON `data`, or
binary (the output's `binary_data` parameter, or the request's `binary_data_output`), in which case
the response is the JSON header (its length in `Inference-Header-Content-Length`) followed by the
outputs' bytes in order, as tritonclient expects.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import struct
import time
from collections.abc import Iterator
from itertools import islice
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from pydantic.json_schema import SkipJsonSchema

from app.errors import InvalidRequestError, TooManyFilesError
from app.protocols.common import (
    EXAMPLE_PNG_B64,
    MODEL_VERSION,
    as_uint8_tensor,
    body_limit,
    check_json_structure,
    check_model,
    classify,
    error_docs,
    inline_schema,
    loaded_versions,
    read_body,
    ready_service,
    serving,
    version_not_found,
)
from app.service import Prediction, PredictionService, ServiceState
from app.signature import INPUTS, V2_DTYPES, DType, InputKind, TensorSpec, columns
from catdog.repository import MODEL_NAME

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (V2)"])

HEADER_LENGTH = "Inference-Header-Content-Length"
BYTES_INPUT = "image"
PIXELS_INPUT = "pixels"
EXTENSIONS = ["binary_tensor_data"]
INPUT_NAMES = {InputKind.ENCODED: BYTES_INPUT, InputKind.PIXELS: PIXELS_INPUT}
# A valid request holds at most 12 objects: the request and its parameters, the input and its
# parameters, four outputs and theirs. Room to spare for clients' own parameters.
MAX_JSON_OBJECTS = 64

# --- the protocol's JSON objects (for validation and the OpenAPI document) -----------------------


class InferParameters(BaseModel):
    # Strict: 0 is not false, "1" is not 1 (the schema says boolean and integer).
    model_config = ConfigDict(extra="allow", strict=True)
    binary_data_size: int | None = Field(
        None, ge=0, description="Binary-data extension: bytes after the JSON"
    )
    binary_data: bool | None = Field(None, description="Binary-data extension: answer this output in binary")
    binary_data_output: bool | None = Field(None, description="Binary-data extension: every output in binary")


class RequestInput(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(description="`image` (BYTES) or `pixels` (UINT8)", examples=["image"])
    shape: list[Annotated[int, Field(ge=0)]] = Field(examples=[[1]])
    datatype: str = Field(examples=["BYTES"])
    parameters: InferParameters | None = None
    data: list[JsonValue] | SkipJsonSchema[None] = Field(
        None,
        json_schema_extra={"minItems": 1},
        description="Row-major, flat or nested; absent when the tensor is sent as binary data",
    )


class RequestOutput(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(examples=["label"])
    parameters: InferParameters | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [EXAMPLE_PNG_B64]}
                    ],
                },
                {
                    "inputs": [
                        {
                            "name": "pixels",
                            "shape": [1, 2, 2, 3],
                            "datatype": "UINT8",
                            "data": [200, 30, 30, 200, 30, 30, 190, 40, 35, 210, 25, 30],
                        }
                    ],
                    "outputs": [{"name": "label"}],
                },
            ]
        },
    )
    id: str | None = None
    parameters: InferParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "catdog",
                    "model_version": MODEL_VERSION,
                    "id": "42",
                    "outputs": [
                        {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.99, 0.01]},
                        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["cat"]},
                        {"name": "pet_score", "shape": [1], "datatype": "FP32", "data": [0.38]},
                        {"name": "is_cat_or_dog", "shape": [1], "datatype": "BOOL", "data": [True]},
                    ],
                }
            ]
        }
    )
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelParameters(BaseModel):
    catdog_model_version: str = Field(
        description="The served model's own version (`model_version` in /metadata)",
        examples=["efficientnet_lite2-20261125-9950a398"],
    )


# Prefixed: generated clients name their classes after schema titles, which must differ from the
# TF Serving front's.
class V2ModelMetadataResponse(BaseModel):
    name: str = Field(examples=["catdog"])
    versions: list[str] = Field(examples=[[MODEL_VERSION]])
    platform: str = Field(examples=["tensorflow_savedmodel"])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: V2ModelParameters


class ServerMetadataResponse(BaseModel):
    name: str = Field(examples=["catdog"])
    version: str = Field(examples=["1.0.0"])
    extensions: list[str] = Field(examples=[EXTENSIONS])


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class V2Error(BaseModel):
    error: str = Field(examples=["model not found: 'resnet' (this server serves 'catdog')"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return error_docs(V2Error, codes, "Malformed request: bad JSON, tensor, shape, base64 or image")


_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request (JSON). With the binary-data extension the body is this "
        "JSON, its length in the `Inference-Header-Content-Length` header, followed by the tensors' "
        "bytes.",
        "content": {
            "application/json": {
                "schema": inline_schema(InferRequest),
                "example": InferRequest.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
            }
        },
    }
}

# --- health and metadata ---------------------------------------------------------------------------

NameParam = Annotated[str, Path(description="Model name", examples=[MODEL_NAME])]
VersionParam = Annotated[
    str,
    Path(
        description="Model version: a loaded version's number (see the metadata's `versions`)",
        examples=[MODEL_VERSION],
    ),
]


@router.get("", summary="Server metadata", response_model=ServerMetadataResponse)
async def server_metadata(request: Request) -> ServerMetadataResponse:
    state: ServiceState = request.app.state.service
    # The repository extension is there only when a control token turns it on.
    extensions = EXTENSIONS + (["model_repository"] if state.settings.control_token is not None else [])
    return ServerMetadataResponse(name=MODEL_NAME, version=request.app.version, extensions=extensions)


@router.get("/health/live", summary="Server liveness", response_model=Live)
async def live() -> Live:
    return Live(live=True)


@router.get(
    "/health/ready",
    summary="Server readiness: 200 once the model is loaded and warmed up, else 503",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "Not ready yet, or shutting down"}},
)
async def ready(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    if state.ready:
        return JSONResponse({"ready": True})
    retry = {"Retry-After": str(state.settings.retry_after_seconds)}
    return JSONResponse({"ready": False}, status_code=503, headers=retry)


def _tensor_metadata(name: str, spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=name, datatype=V2_DTYPES[spec.dtype], shape=list(spec.shape))


def _model_metadata(service: PredictionService, versions: list[str]) -> V2ModelMetadataResponse:
    """From the signature (app/signature.py): the inputs under this protocol's names, the outputs."""
    return V2ModelMetadataResponse(
        name=MODEL_NAME,
        versions=versions,
        platform="tensorflow_savedmodel",
        inputs=[_tensor_metadata(INPUT_NAMES[kind], spec) for kind, spec in INPUTS.items()],
        outputs=[_tensor_metadata(spec.name, spec) for spec in service.outputs],
        parameters=V2ModelParameters(catdog_model_version=service.model.metadata.version),
    )


def _not_found(name: str, version: str | None) -> str:
    return f"model not found: '{name}' version '{version}'"


async def _metadata(request: Request, name: str, version: str | None) -> Response:
    check_model(name, version, "model")
    with version_not_found(_not_found(name, version)):
        service = ready_service(request, version)
    versions = [str(live.number) for live in loaded_versions(request)]
    return JSONResponse(_model_metadata(service, versions).model_dump())


async def _model_ready(request: Request, name: str, version: str | None) -> Response:
    check_model(name, version, "model")
    with version_not_found(_not_found(name, version)):
        ready_service(request, version)  # 503 until a version is loaded
    return JSONResponse({"name": name, "ready": True})


_METADATA_DOC: dict[str, Any] = {
    "summary": "Model metadata: inputs, outputs, versions",
    "response_model": V2ModelMetadataResponse,
    "responses": _errors(404, 503),
}
_READY_DOC: dict[str, Any] = {
    "summary": "Model readiness",
    "response_model": ModelReady,
    "responses": _errors(404, 503),
}
_INFER_DOC: dict[str, Any] = {
    "summary": "Classify images: BYTES (encoded) or UINT8 [N,H,W,3] (pixels) input",
    "response_model": InferResponse,
    "responses": {
        200: {
            "description": "The outputs: JSON, or with binary outputs requested the JSON header (its length "
            "in `Inference-Header-Content-Length`) followed by the outputs' bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        **_errors(400, 404, 413, 415, 503),
    },
    "openapi_extra": _INFER_BODY,
}


@router.get("/models/{name}", **_METADATA_DOC)
async def model_metadata(request: Request, name: NameParam) -> Response:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", **_METADATA_DOC)
async def model_version_metadata(request: Request, name: NameParam, version: VersionParam) -> Response:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", **_READY_DOC)
async def model_ready(request: Request, name: NameParam) -> Response:
    return await _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", **_READY_DOC)
async def model_version_ready(request: Request, name: NameParam, version: VersionParam) -> Response:
    return await _model_ready(request, name, version)


@router.post("/models/{name}/infer", **_INFER_DOC)
async def infer(request: Request, name: NameParam) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", **_INFER_DOC)
async def infer_version(request: Request, name: NameParam, version: VersionParam) -> Response:
    return await _infer(request, name, version)


# --- inference -------------------------------------------------------------------------------------


async def _infer(request: Request, name: str, version: str | None) -> Response:
    started = time.perf_counter()
    check_model(name, version, "model")
    not_found = _not_found(name, version)
    with version_not_found(not_found):
        service = ready_service(request, version)
    body = await read_body(request, body_limit(service.settings))
    # Held until the answer is made: a version being swapped out finishes the requests it took.
    with version_not_found(not_found), serving(request, version) as service:
        # Parsing and splitting a big body take a while: in a worker thread. The JSON parsers hold the
        # GIL while they run, so it is check_json_structure's bound that keeps the event loop responsive.
        document, wanted, tensor = await asyncio.to_thread(
            _decode, body, request.headers.get(HEADER_LENGTH), service
        )
        prediction = await classify(service, tensor, started, BYTES_INPUT)
        return _response(document, prediction, service.outputs, wanted)


def _decode(
    body: bytearray, header_length: str | None, service: PredictionService
) -> tuple[InferRequest, list[tuple[str, bool]], list[bytes] | np.ndarray]:
    """The request, the outputs it wants, and its input: encoded images or a pixel tensor."""
    limit = service.settings.max_batch_files
    header, binary = _split_body(body, header_length)
    # However many images it carries, a V2 request has a dozen objects: more is malformed, a 400.
    check_json_structure(header, MAX_JSON_OBJECTS, limit, objects_status=400)
    try:
        document = InferRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid inference request: {_first_problem(exc)}") from exc
    except (TypeError, ValueError) as exc:  # a validator that met a type it did not expect
        raise InvalidRequestError(f"invalid inference request: {exc}") from exc
    if len(document.inputs) != 1:
        raise InvalidRequestError(
            f"expected exactly one input ('{BYTES_INPUT}' or '{PIXELS_INPUT}'), got {len(document.inputs)}",
        )
    wanted = _requested_outputs(document, service)
    tensor = document.inputs[0]
    raw = _binary_part(tensor, binary)
    if tensor.name == BYTES_INPUT:
        return document, wanted, _bytes_elements(tensor, raw, limit)
    if tensor.name == PIXELS_INPUT:
        return document, wanted, _pixels(tensor, raw)
    raise InvalidRequestError(
        f"unknown input '{tensor.name}': this model takes '{BYTES_INPUT}' (BYTES, encoded images) "
        f"or '{PIXELS_INPUT}' (UINT8 [N, H, W, 3])",
    )


def _split_body(body: bytearray, header_length: str | None) -> tuple[bytes | bytearray, memoryview]:
    """The JSON header and the binary data after it (a view: the tensors are not copied)."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InvalidRequestError(
            f"{HEADER_LENGTH} is '{header_length}': expected 0..{len(body)} (the body's length)"
        )
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "body"
    return f"{where}: {error.get('msg', '')}"


def _expected_size(tensor: RequestInput) -> int:
    return math.prod(tensor.shape)


def _binary_part(tensor: RequestInput, binary: memoryview) -> memoryview | None:
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is None:
        if binary:
            raise InvalidRequestError(
                f"{len(binary)} bytes of binary data follow the JSON, but no input claims them"
            )
        if tensor.data is None:
            raise InvalidRequestError(f"input '{tensor.name}' has neither 'data' nor binary data")
        return None
    if size != len(binary):
        raise InvalidRequestError(
            f"input '{tensor.name}' declares binary_data_size {size}, "
            f"but {len(binary)} bytes follow the JSON",
        )
    return binary


def _leaves(values: JsonValue) -> Iterator[JsonValue]:
    if isinstance(values, list):
        for value in values:
            yield from _leaves(value)
    else:
        yield values


def _bytes_elements(tensor: RequestInput, raw: memoryview | None, limit: int) -> list[bytes]:
    if tensor.datatype != "BYTES":
        raise InvalidRequestError(
            f"input '{BYTES_INPUT}' must be BYTES (encoded images), not {tensor.datatype}"
        )
    # The shape says how many images: too many is refused before the data is split, and the split
    # stops one element past the shape, however many tiny elements the data holds.
    expected = _expected_size(tensor)
    if expected > limit:
        raise TooManyFilesError(expected, limit)
    if raw is not None:
        elements = _deserialize_bytes(raw, expected + 1)
        _check_count(tensor, len(elements), expected)
        return elements
    values = list(islice(_leaves(tensor.data), expected + 1))
    _check_count(tensor, len(values), expected)
    return [_base64_element(value, index) for index, value in enumerate(values)]


def _check_count(tensor: RequestInput, count: int, expected: int) -> None:
    if count != expected:
        holds = f"more than {expected}" if count > expected else str(count)
        raise InvalidRequestError(
            f"input '{BYTES_INPUT}' has shape {tensor.shape} but holds {holds} elements"
        )


def _base64_element(value: JsonValue, index: int) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequestError(f"input '{BYTES_INPUT}' element {index} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(
            f"input '{BYTES_INPUT}' element {index} is not valid base64: {exc}"
        ) from exc


def _deserialize_bytes(raw: memoryview, max_elements: int) -> list[bytes]:
    """Triton's BYTES serialization: each element a 4-byte little-endian length, then its bytes. At
    most `max_elements` of them."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) < max_elements:
        if offset + 4 > len(raw):
            raise InvalidRequestError("BYTES binary data is truncated inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidRequestError(
                f"BYTES binary data is truncated: an element of {length} bytes does not fit"
            )
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    return elements


def _pixels(tensor: RequestInput, raw: memoryview | None) -> np.ndarray:
    if tensor.datatype != "UINT8":
        raise InvalidRequestError(f"input '{PIXELS_INPUT}' must be UINT8, not {tensor.datatype}")
    if len(tensor.shape) != 4 or tensor.shape[3] != 3 or 0 in tensor.shape:
        raise InvalidRequestError(f"input '{PIXELS_INPUT}' must have shape [N, H, W, 3], got {tensor.shape}")
    expected = _expected_size(tensor)
    if raw is not None:
        values = np.frombuffer(raw, dtype=np.uint8)
    else:
        values = as_uint8_tensor(tensor.data, f"input '{PIXELS_INPUT}'").reshape(-1)
    if values.size != expected:
        raise InvalidRequestError(
            f"input '{PIXELS_INPUT}' has shape {tensor.shape} ({expected} values) but holds {values.size}",
        )
    return values.reshape(tensor.shape)


def _requested_outputs(document: InferRequest, service: PredictionService) -> list[tuple[str, bool]]:
    """(output name, binary?) in the order to answer them."""
    everything = bool(document.parameters and document.parameters.binary_data_output)
    available = [spec.name for spec in service.outputs]
    if document.outputs is None:
        return [(name, everything) for name in available]
    wanted = []
    for output in document.outputs:
        if output.name not in available:
            raise InvalidRequestError(
                f"unknown output '{output.name}': this model has {', '.join(available)}"
            )
        binary = (
            output.parameters.binary_data
            if output.parameters and output.parameters.binary_data is not None
            else everything
        )
        wanted.append((output.name, binary))
    return wanted


def _response(
    document: InferRequest, prediction: Prediction, specs: list[TensorSpec], wanted: list[tuple[str, bool]]
) -> Response:
    """The answers as the outputs asked for, each in JSON `data` or as binary data after the header."""
    by_name = {spec.name: spec for spec in specs}
    values = columns(prediction.answers, [by_name[name] for name, _ in wanted])
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in wanted:
        spec = by_name[name]
        shape = [len(prediction.answers), *spec.shape[1:]]
        output: dict[str, Any] = {"name": name, "datatype": V2_DTYPES[spec.dtype], "shape": shape}
        if binary:
            blob = _binary(spec.dtype, values[name])
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            # FP32 in JSON: the values as the core rounded them (6 decimals), not float32 noise.
            output["data"] = (
                [value for row in values[name] for value in row] if len(shape) > 1 else values[name]
            )
        outputs.append(output)
    payload: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": str(prediction.version)}
    if document.id is not None:
        payload["id"] = document.id
    payload["outputs"] = outputs
    header = json.dumps(payload, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _binary(dtype: DType, column: list[Any]) -> bytes:
    """A column in the binary tensor data extension's layout: little-endian, strings length-prefixed."""
    if dtype is DType.STRING:
        return b"".join(struct.pack("<I", len(element)) + element for element in (v.encode() for v in column))
    return np.asarray(column, dtype="<f4" if dtype is DType.FLOAT32 else np.bool_).tobytes()
