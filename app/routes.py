"""HTTP endpoints: prediction, health, model metadata and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app.batching import BatcherClosedError, BatchResult, InferenceError, QueueFullError
from app.dependencies import Service, ServiceState, get_service, get_state
from app.errors import APIError, error_response
from app.model import ImageScores
from app.schemas import (
    BatchItem,
    BatchPredictionResponse,
    ErrorResponse,
    Health,
    Prediction,
    PredictionResponse,
    Readiness,
    Timing,
)
from app.uploads import Upload, read_image_files, read_single_image
from catdog.contract import ModelMetadata
from catdog.imaging import EmptyImageError, ImageDecodeError, ImageTooLargeError, load_model_input

router = APIRouter()

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
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": _FILE_SCHEMA}},
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


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error_doc(
        "Empty, corrupt or undecodable image",
        "undecodable_image",
        "'cat.jpg': the upload is not a decodable image; supported formats: JPEG, PNG, GIF, WEBP, BMP, TIFF",
    ),
    413: _error_doc(
        "Upload over the byte or pixel limit, or too many files",
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
        "Queue full or model not ready; see Retry-After",
        "overloaded",
        "the service is at capacity: 256 images are waiting (limit 256); retry shortly",
    ),
}

ServiceDep = Annotated[Service, Depends(get_service)]


@router.post(
    "/predict",
    response_model=PredictionResponse,
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
    summary="Classify one image as cat or dog",
    tags=["prediction"],
)
async def predict(request: Request, service: ServiceDep) -> PredictionResponse:
    started = time.perf_counter()
    upload = await read_single_image(request, service.settings.max_upload_bytes)
    with service.batcher.announce():
        image = await _decode(upload, service)
    decoded = time.perf_counter()
    result = (await _classify(service, [image]))[0]
    return PredictionResponse(
        **_describe(service, result.output).model_dump(),
        model_version=service.model.version,
        latency_ms=_ms(time.perf_counter() - started),
        timing=Timing(
            decode_ms=_ms(decoded - started),
            queue_ms=_ms(result.queue_seconds),
            inference_ms=_ms(result.inference_seconds),
            batch_size=result.batch_size,
        ),
    )


@router.post(
    "/predict/batch",
    response_model=BatchPredictionResponse,
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="Classify several images in one request",
    tags=["prediction"],
)
async def predict_batch(request: Request, service: ServiceDep) -> BatchPredictionResponse:
    started = time.perf_counter()
    settings = service.settings
    uploads = await read_image_files(request, settings.max_upload_bytes, settings.max_batch_files)
    with service.batcher.announce(len(uploads)):
        outcomes = await asyncio.gather(
            *(_decode(upload, service) for upload in uploads), return_exceptions=True
        )
    failures = [
        {"index": index, "filename": upload.filename, "code": outcome.code, "message": outcome.message}
        for index, (upload, outcome) in enumerate(zip(uploads, outcomes, strict=True))
        if isinstance(outcome, APIError)
    ]
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, APIError):
            raise outcome
    if failures:
        # The whole request fails with the first bad file's status; details name every bad file.
        first = next(o for o in outcomes if isinstance(o, APIError))
        raise APIError(
            first.status_code,
            first.code,
            f"{len(failures)} of {len(uploads)} files could not be used; first: {failures[0]['message']}",
            failures,
        )
    images = [outcome for outcome in outcomes if isinstance(outcome, np.ndarray)]
    results = await _classify(service, images)
    predictions = []
    for index, (upload, result) in enumerate(zip(uploads, results, strict=True)):
        described = _describe(service, result.output).model_dump()
        predictions.append(BatchItem(index=index, filename=upload.filename, **described))
    return BatchPredictionResponse(
        predictions=predictions,
        model_version=service.model.version,
        latency_ms=_ms(time.perf_counter() - started),
    )


@router.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorResponse, "description": "Not ready"}},
    tags=["operations"],
    summary="Readiness: model loaded, warmed up, batcher running",
)
async def readyz(state: Annotated[ServiceState, Depends(get_state)]) -> Readiness | JSONResponse:
    if not state.ready or state.model is None or state.batcher is None:
        return error_response(
            503, "not_ready", "the model is not loaded and warmed up, or the service is stopping"
        )
    return Readiness(status="ready", model_version=state.model.version, queue_depth=state.batcher.queue_depth)


@router.get(
    "/metadata",
    tags=["operations"],
    summary="The model's metadata.json, as validated at load time",
    responses={200: {"model": ModelMetadata, "description": "metadata.json of the served model"}},
)
async def metadata(service: ServiceDep) -> dict[str, Any]:
    document: dict[str, Any] = service.model.metadata.model_dump(mode="json")
    return document


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
async def metrics(state: Annotated[ServiceState, Depends(get_state)]) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _decode(upload: Upload, service: Service) -> np.ndarray:
    """Decode off the event loop; a bad image becomes a 400 or 413 naming the file."""
    name = f"'{upload.filename}'" if upload.filename else "the image"
    try:
        return await run_in_threadpool(
            load_model_input, upload.data, service.model.image_size, service.settings.max_image_pixels
        )
    except ImageTooLargeError as exc:
        raise APIError(
            413, "image_too_large", f"{name}: {exc}", {"max_image_pixels": exc.max_pixels}
        ) from exc
    except EmptyImageError as exc:
        raise APIError(400, "empty_image", f"{name}: {exc}") from exc
    except ImageDecodeError as exc:
        raise APIError(400, "undecodable_image", f"{name}: {exc}") from exc


async def _classify(service: Service, images: list[np.ndarray]) -> list[BatchResult[ImageScores]]:
    retry_after = {"Retry-After": str(service.settings.retry_after_seconds)}
    try:
        return await service.batcher.submit_many(images)
    except QueueFullError as exc:
        raise APIError(503, "overloaded", f"the service is at capacity: {exc}", headers=retry_after) from exc
    except BatcherClosedError as exc:
        raise APIError(503, "not_ready", str(exc), headers=retry_after) from exc
    except InferenceError as exc:
        raise APIError(500, "inference_failed", "the model failed on this request") from exc


def _describe(service: Service, scores: ImageScores) -> Prediction:
    names = service.model.class_names
    probabilities = {name: round(float(p), 6) for name, p in zip(names, scores.probabilities, strict=True)}
    best = int(np.argmax(scores.probabilities))
    threshold = service.model.pet_threshold
    pet_score = None if scores.pet_score is None else round(scores.pet_score, 6)
    return Prediction(
        label=names[best],
        confidence=probabilities[names[best]],
        probabilities=probabilities,
        pet_score=pet_score,
        # Compared as reported, so a client applying the same threshold to pet_score agrees.
        is_cat_or_dog=None if pet_score is None or threshold is None else pet_score >= threshold,
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
