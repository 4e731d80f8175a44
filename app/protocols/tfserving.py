"""TensorFlow Serving's REST API (`/v1/models/...`), on the /predict service.

Every route takes the model as TF Serving addresses it: `/v1/models/catdog` (the default version),
`/v1/models/catdog/versions/{N}` or `/v1/models/catdog/labels/{label}` (serving.json's labels):
- `GET ...`: version status (`model_version_status`; every version seen, without a version or label)
- `GET .../metadata`: the `serving_default` signature
- `POST ...:classify|:regress`: 400, as TF Serving answers for a model whose signature is not a
  classify or regress one
- `POST ...:predict`: row format `{"instances": [...]}` answers `{"predictions": [...]}`, columnar
  `{"inputs": ...}` answers `{"outputs": {...}}`; the version that answered is in `X-Model-Version`

An instance is an encoded image as `{"b64": "..."}` (TF Serving's encoding of binary strings; the input
is named `image_bytes`, and `{"image_bytes": {"b64": "..."}}` works too) or RGB pixels as a nested
`[H][W][3]` list of 0..255 integers (input `images`). Every prediction holds `probabilities` (class
names order), `label`, and for models with a pet head `pet_score` and `is_cat_or_dog`. Errors are
`{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.errors import InvalidRequestError, ModelNotFoundError, TooManyFilesError
from app.protocols.common import (
    EXAMPLE_PNG_B64,
    MODEL_VERSION,
    as_uint8_tensor,
    body_limit,
    check_json_structure,
    classify,
    error_docs,
    read_body,
    ready_service,
    serving,
    version_not_found,
)
from app.repository_config import LABEL_PATTERN
from app.service import Prediction, PredictionService, ServiceState
from app.signature import INPUTS, TF_DTYPES, InputKind, TensorSpec, columns
from catdog.repository import MODEL_NAME

router = APIRouter(prefix="/v1/models", tags=["TensorFlow Serving REST API"])

VERSION = MODEL_VERSION
# Which version answered a :predict (a response header: TF Serving's body has no field for it).
VERSION_HEADER = "X-Model-Version"
SIGNATURE = "serving_default"
BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "images"
PREDICT_METHOD = "tensorflow/serving/predict"
INPUT_NAMES = {InputKind.ENCODED: BYTES_INPUT, InputKind.PIXELS: PIXELS_INPUT}
# The type of GetModelMetadataResponse.metadata["signature_def"], a google.protobuf.Any.
SIGNATURE_DEF_MAP_TYPE = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# --- documentation -----------------------------------------------------------------------------------


# Prefixed: generated clients name their classes after schema titles, which must differ from the
# V2 front's.
class TfServingError(BaseModel):
    error: str = Field(examples=["Servable not found for request: Latest(resnet)"])


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"instances": [{"b64": EXAMPLE_PNG_B64}, {"b64": EXAMPLE_PNG_B64}]},
                {"signature_name": "serving_default", "inputs": {"image_bytes": [{"b64": EXAMPLE_PNG_B64}]}},
                {"instances": [[[[200, 30, 30], [190, 40, 35]], [[210, 25, 30], [205, 28, 33]]]]},
            ]
        },
    )
    signature_name: str | None = Field(None, description="Only `serving_default` (or absent)")
    instances: list[Any] | None = Field(None, description="Row format: one entry per image")
    inputs: Any = Field(None, description="Columnar format: the images, or {input name: images}")


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "predictions": [
                        {
                            "probabilities": [0.999991, 9e-06],
                            "label": "cat",
                            "pet_score": 0.37752,
                            "is_cat_or_dog": True,
                        }
                    ]
                },
                {"outputs": {"probabilities": [[0.02, 0.98]], "label": ["dog"]}},
            ]
        },
    )
    predictions: list[dict[str, Any]] | None = Field(None, description="Answer to the row format")
    outputs: dict[str, list[Any]] | None = Field(None, description="Answer to the columnar format")


class ModelVersionStatus(BaseModel):
    version: str = Field(examples=[VERSION])
    state: str = Field(examples=["AVAILABLE"])
    status: dict[str, str] = Field(examples=[{"error_code": "OK", "error_message": ""}])


class ModelStatusResponse(BaseModel):
    model_version_status: list[ModelVersionStatus]


class TfServingModelMetadataResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_spec: dict[str, Any] = Field(
        examples=[{"name": MODEL_NAME, "signature_name": "", "version": VERSION}]
    )
    metadata: dict[str, Any] = Field(
        description="`signature_def`: a google.protobuf.Any holding a tensorflow.serving.SignatureDefMap"
    )


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return error_docs(TfServingError, codes, "Malformed request: bad path, JSON, instances, base64 or image")


_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "signature_name": {"type": "string", "enum": ["serving_default", ""]},
                        "instances": {"type": "array", "items": {}, "minItems": 1},
                        "inputs": {"type": ["object", "array"]},
                    },
                    # Row or columnar: exactly one of the two.
                    "oneOf": [
                        {"required": ["instances"], "not": {"required": ["inputs"]}},
                        {"required": ["inputs"], "not": {"required": ["instances"]}},
                    ],
                },
                "examples": {
                    "row": {"value": {"instances": [{"b64": EXAMPLE_PNG_B64}]}},
                    "columnar": {"value": {"inputs": {"image_bytes": [{"b64": EXAMPLE_PNG_B64}]}}},
                    "pixels": {
                        "value": {
                            "instances": [[[[200, 30, 30], [190, 40, 35]], [[210, 25, 30], [205, 28, 33]]]]
                        }
                    },
                },
            }
        },
    }
}

NameParam = Annotated[str, Path(description="Model name", examples=[MODEL_NAME])]
VersionParam = Annotated[
    str, Path(description="Model version: a loaded version's number", examples=[VERSION])
]
LabelParam = Annotated[
    str, Path(description="Version label, from the repository's serving.json", examples=["stable"])
]

# --- routes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """Which version a path names: `/versions/{version}`, `/labels/{label}`, or neither (the default)."""

    name: str
    version: str | None = None
    label: str | None = None

    @property
    def requested(self) -> str | None:
        return self.version if self.version is not None else self.label

    @property
    def servable(self) -> str:
        """As TF Serving names the request in its 404s."""
        if self.version is not None:
            return f"Specific({self.name}, {self.version})"
        if self.label is not None:
            return f"Labeled({self.name}, {self.label})"
        return f"Latest({self.name})"


def _check(request: Request, address: Address) -> None:
    """TF Serving's 400 for a path its routes do not parse (a model name holds no ':', a version is
    a number, a label no ':'), and its 404 for a model it does not serve."""
    if (
        ":" in address.name
        or (address.version is not None and not address.version.isdigit())
        or (address.label is not None and not re.fullmatch(LABEL_PATTERN, address.label))
    ):
        raise InvalidRequestError(f"Malformed request: {request.method} {request.url.path}")
    if address.name != MODEL_NAME:
        raise ModelNotFoundError(f"Servable not found for request: {address.servable}")


def _service(request: Request, address: Address) -> PredictionService:
    with version_not_found(f"Servable not found for request: {address.servable}", detail=False):
        return ready_service(request, address.requested)


_STATES = {"LOADING": "LOADING", "AVAILABLE": "AVAILABLE", "UNLOADING": "UNLOADING", "UNAVAILABLE": "END"}


async def _status(request: Request, address: Address) -> Response:
    _check(request, address)
    state: ServiceState = request.app.state.service
    statuses = [] if state.versions is None else state.versions.index()
    if address.requested is not None:
        with version_not_found(f"Servable not found for request: {address.servable}", detail=False):
            number = ready_service(request, address.requested).version
        statuses = [status for status in statuses if status.number == number]
    return JSONResponse(
        {
            "model_version_status": [
                {
                    "version": str(status.number),
                    "state": _STATES[status.state.value],
                    "status": (
                        {"error_code": "UNKNOWN", "error_message": status.reason}
                        if status.reason.startswith("refused")
                        else {"error_code": "OK", "error_message": ""}
                    ),
                }
                for status in statuses
            ]
        }
    )


def _tensor(name: str, spec: TensorSpec) -> dict[str, Any]:
    """A TensorInfo as TF Serving's JSON writes it."""
    return {
        "dtype": TF_DTYPES[spec.dtype],
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in spec.shape],
            "unknown_rank": False,
        },
        "name": name,
    }


async def _metadata(request: Request, address: Address) -> Response:
    _check(request, address)
    service = _service(request, address)
    # From the signature (app/signature.py). Either input, not both: encoded images, or pixels.
    inputs = {INPUT_NAMES[kind]: _tensor(INPUT_NAMES[kind], spec) for kind, spec in INPUTS.items()}
    signature = {
        "inputs": inputs,
        "outputs": {spec.name: _tensor(spec.name, spec) for spec in service.outputs},
        "method_name": PREDICT_METHOD,
    }
    return JSONResponse(
        {
            "model_spec": {"name": MODEL_NAME, "signature_name": "", "version": str(service.version)},
            # Only what TF Serving's GetModelMetadataResponse holds; the rest is at /metadata.
            "metadata": {
                "signature_def": {"@type": SIGNATURE_DEF_MAP_TYPE, "signature_def": {SIGNATURE: signature}}
            },
        }
    )


_STATUS_DOC: dict[str, Any] = {
    "summary": "Model version status",
    "response_model": ModelStatusResponse,
    "responses": _errors(400, 404),
}
_METADATA_DOC: dict[str, Any] = {
    "summary": "Model metadata: the serving_default signature",
    "response_model": TfServingModelMetadataResponse,
    "responses": _errors(400, 404, 503),
}
_PREDICT_DOC: dict[str, Any] = {
    "summary": "Classify images: row ({instances}) or columnar ({inputs}) format",
    "response_model": PredictResponse,
    "response_model_exclude_none": True,
    "responses": _errors(400, 404, 413, 415, 503),
    "openapi_extra": _PREDICT_BODY,
}


_UNSUPPORTED_DOC: dict[str, Any] = {
    "summary": "Not supported: 400, as the serving_default signature is a predict one",
    "responses": {200: {"description": "Never sent"}, **_errors(400, 404)},
}


def _routes(
    method: str,
    action: str,
    names: tuple[str, str, str],
    doc: dict[str, Any],
    handler: Callable[[Request, Address], Awaitable[Response]],
) -> None:
    """`/{name}<action>`, `/{name}/versions/{version}<action>` and `/{name}/labels/{label}<action>`, as
    TF Serving addresses a model, each with its path parameters documented."""

    async def default(request: Request, name: NameParam) -> Response:
        return await handler(request, Address(name))

    async def by_version(request: Request, name: NameParam, version: VersionParam) -> Response:
        return await handler(request, Address(name, version=version))

    async def by_label(request: Request, name: NameParam, label: LabelParam) -> Response:
        return await handler(request, Address(name, label=label))

    endpoints: tuple[Callable[..., Awaitable[Response]], ...] = (default, by_version, by_label)
    for path, endpoint, route_name in zip(
        ("/{name}", "/{name}/versions/{version}", "/{name}/labels/{label}"),
        endpoints,
        names,
        strict=True,
    ):
        router.add_api_route(path + action, endpoint, methods=[method], name=route_name, **doc)


async def _classify(request: Request, address: Address) -> Response:
    return await _unsupported(request, address, "classify")


async def _regress(request: Request, address: Address) -> Response:
    return await _unsupported(request, address, "regress")


async def _unsupported(request: Request, address: Address, method: str) -> Response:
    """TF Serving's answer to :classify or :regress on a model whose signature is a predict one."""
    _check(request, address)
    kind = "classification" if method == "classify" else "regression"
    raise InvalidRequestError(
        f"Expected {kind} signature method_name to be tensorflow/serving/{method}. Was: {PREDICT_METHOD}",
    )


# --- predict ---------------------------------------------------------------------------------------------


async def _predict(request: Request, address: Address) -> Response:
    started = time.perf_counter()
    _check(request, address)
    service = _service(request, address)
    body = await read_body(request, body_limit(service.settings))
    # Held until the answer is made: a version being swapped out finishes the requests it took.
    not_found = f"Servable not found for request: {address.servable}"
    with version_not_found(not_found, detail=False), serving(request, address.requested) as service:
        # Parsing and decoding a big body take a while: in a worker thread. json.loads holds the GIL
        # while it runs, so it is check_json_structure's bound that keeps the event loop responsive.
        row, images = await asyncio.to_thread(_decode, body, service.settings.max_batch_files)
        prediction = await classify(service, images, started, "instances")
        response = _answer(prediction, service.outputs, row)
        # TF Serving's answer has no place for it; /predict and V2 carry it in the body.
        response.headers[VERSION_HEADER] = str(service.version)
        return response


def _max_objects(limit: int) -> int:
    """Objects in a request of `limit` images: `{"image_bytes": {"b64": ...}}` is two per image, then
    the request and the columnar format's `{input name: images}`. Room to spare."""
    return 2 * limit + 16


def _decode(body: bytearray, limit: int) -> tuple[bool, list[bytes] | np.ndarray]:
    """Whether the request is in the row format, and its images: encoded, or a pixel tensor."""
    check_json_structure(body, _max_objects(limit), limit)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"JSON Parse error: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRequestError("the request body must be a JSON object with 'instances' or 'inputs'")
    signature = document.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidRequestError("'signature_name' must be a string")
    if signature not in ("", SIGNATURE):
        raise InvalidRequestError(f'Serving signature name: "{signature}" not found in signature def')
    row = "instances" in document
    if row == ("inputs" in document):
        raise InvalidRequestError(
            "the request must have exactly one of 'instances' (row) or 'inputs' (columnar)"
        )
    if row:
        values = document["instances"]
        if not isinstance(values, list):
            raise InvalidRequestError("'instances' must be a list, one entry per image")
        _check_count(values, limit)
        values = [_unwrap_named(value, f"instances[{index}]") for index, value in enumerate(values)]
    else:
        values = _columnar_images(document["inputs"])
        _check_count(values, limit)
    return row, _images(values)


def _check_count(values: list[Any], limit: int) -> None:
    if len(values) > limit:
        raise TooManyFilesError(len(values), limit)


def _unwrap_named(value: Any, where: str) -> Any:
    """`{"image_bytes": x}` or `{"images": x}` -> x; `{"b64": ...}` and pixel lists stay as they are."""
    if isinstance(value, dict) and "b64" not in value:
        if len(value) != 1 or next(iter(value)) not in (BYTES_INPUT, PIXELS_INPUT):
            raise InvalidRequestError(
                f"{where}: expected one named input, '{BYTES_INPUT}' or '{PIXELS_INPUT}', "
                f"got {sorted(value)}",
            )
        return next(iter(value.values()))
    return value


def _columnar_images(inputs: Any) -> list[Any]:
    if isinstance(inputs, dict) and "b64" not in inputs:
        inputs = _unwrap_named(inputs, "inputs")
    if isinstance(inputs, dict):  # one {"b64": ...}: a single image
        return [inputs]
    if not isinstance(inputs, list):
        raise InvalidRequestError("'inputs' must be the images (a list) or {input name: images}")
    if inputs and all(isinstance(value, list) for value in inputs) and _depth(inputs) == 3:
        return [inputs]  # a single [H][W][3] image
    return inputs


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth


def _images(values: list[Any]) -> list[bytes] | np.ndarray:
    if not values:
        raise InvalidRequestError("no images: 'instances' or 'inputs' is empty")
    encoded = [isinstance(value, dict) for value in values]
    if all(encoded):
        return [_b64(value, index) for index, value in enumerate(values)]
    if any(encoded):
        raise InvalidRequestError(
            'mixed instances: send either encoded images ({"b64": ...}) or pixel arrays'
        )
    if any(isinstance(value, str) for value in values):
        raise InvalidRequestError(f'\'{BYTES_INPUT}\' values are binary: encode each as {{"b64": "..."}}')
    pixels = as_uint8_tensor(values, "pixel instances")
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise InvalidRequestError(
            "pixel instances must each be [height][width][3] and all the same size, "
            f"got shape {list(pixels.shape)}",
        )
    return pixels


def _b64(value: dict[str, Any], index: int) -> bytes:
    encoded = value.get("b64")
    if len(value) != 1 or not isinstance(encoded, str):
        raise InvalidRequestError(f'image {index}: expected {{"b64": "<base64>"}}, got keys {sorted(value)}')
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"image {index}: invalid base64: {exc}") from exc


def _answer(prediction: Prediction, specs: list[TensorSpec], row: bool) -> Response:
    values = columns(prediction.answers, specs)
    if not row:
        return JSONResponse({"outputs": values})
    count = len(prediction.answers)
    return JSONResponse(
        {"predictions": [{name: column[i] for name, column in values.items()} for i in range(count)]}
    )


# The :method routes first, so a PUT or DELETE on .../catdog:predict answers 405 `Allow: POST`; a GET
# reaches the status route, which answers TF Serving's 400 for a path it does not parse.
# Route names (and so OpenAPI operation ids): default, by version, by label.
_routes("POST", ":classify", ("classify", "classify_version", "classify_label"), _UNSUPPORTED_DOC, _classify)
_routes("POST", ":regress", ("regress", "regress_version", "regress_label"), _UNSUPPORTED_DOC, _regress)
_routes("POST", ":predict", ("predict", "predict_version", "predict_label"), _PREDICT_DOC, _predict)
_routes("GET", "", ("model_status", "model_version_status", "model_label_status"), _STATUS_DOC, _status)
_routes(
    "GET",
    "/metadata",
    ("model_metadata", "model_version_metadata", "model_label_metadata"),
    _METADATA_DOC,
    _metadata,
)
