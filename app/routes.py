"""The HTTP API's endpoints, a front over the prediction core: read the request, call the core
(app/service.py), encode its answer as this API's JSON.

Documentation lives in app/openapi.py, the work in app/service.py, errors are `APIError`s rendered
by app/errors.py.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app import openapi
from app.errors import APIError
from app.schemas import (
    BatchItem,
    BatchPredictionResponse,
    Health,
    PredictionResponse,
    Readiness,
    Threads,
    Timing,
)
from app.service import EncodedImage, Prediction, PredictionService, ServiceState
from app.signature import ImageAnswer
from app.uploads import read_image_files, read_single_image
from catdog.runtimes import runtime_thread_count

router = APIRouter()


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
# pool, a thread hop per dependency per request for what is an attribute lookup.
async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


async def get_service(state: Annotated[ServiceState, Depends(get_state)]) -> PredictionService:
    """503 `not_ready` with Retry-After until the lifespan has loaded the model and started the batcher."""
    return state.require_ready()


StateDep = Annotated[ServiceState, Depends(get_state)]
ServiceDep = Annotated[PredictionService, Depends(get_service)]


def _fields(answer: ImageAnswer, class_names: list[str]) -> dict[str, Any]:
    """A `Prediction` schema's fields from the core's answer."""
    return {
        "label": answer.label,
        "confidence": answer.confidence,
        "probabilities": dict(zip(class_names, answer.probabilities, strict=True)),
        "pet_score": answer.pet_score,
        "is_cat_or_dog": answer.is_cat_or_dog,
    }


def single_answer(prediction: Prediction, class_names: list[str]) -> PredictionResponse:
    (answer,) = prediction.answers
    timings = prediction.timings
    assert timings is not None  # classify_one times its image
    return PredictionResponse(
        **_fields(answer, class_names),
        version=str(prediction.version),
        model_version=prediction.model_version,
        latency_ms=prediction.latency_ms,
        timing=Timing(
            decode_ms=timings.decode_ms,
            queue_ms=timings.queue_ms,
            inference_ms=timings.inference_ms,
            batch_size=timings.batch_size,
        ),
    )


def batch_answer(
    prediction: Prediction, class_names: list[str], filenames: list[str | None]
) -> BatchPredictionResponse:
    return BatchPredictionResponse(
        predictions=[
            BatchItem(index=index, filename=filename, **_fields(answer, class_names))
            for index, (answer, filename) in enumerate(zip(prediction.answers, filenames, strict=True))
        ],
        version=str(prediction.version),
        model_version=prediction.model_version,
        latency_ms=prediction.latency_ms,
    )


def answer_json(answer: BaseModel) -> Response:
    """The service's validated answer as JSON, encoded once. Returned as a model, FastAPI would dump
    it, validate the dump against `response_model` again and encode that: ~0.1 ms more per request
    for the same bytes. The routes keep `response_model` for the OpenAPI schema."""
    return Response(answer.model_dump_json(), media_type="application/json")


MAX_VERSION_LENGTH = openapi.MAX_VERSION_LENGTH
VersionQuery = Annotated[
    str | None,
    Query(description=openapi.VERSION_DESCRIPTION, examples=["1"], max_length=MAX_VERSION_LENGTH),
]


def pinned_version(request: Request) -> str | None:
    """The prediction routes' `version` query parameter, read by hand: declared as a FastAPI
    parameter, its validation cost a few percent of throughput at concurrency 8 (documented in
    app/openapi.py instead)."""
    version = request.query_params.get("version")
    if version is not None and len(version) > MAX_VERSION_LENGTH:
        raise APIError(
            422,
            "validation_error",
            "the request is missing or has invalid fields",
            [
                {
                    "location": ["query", "version"],
                    "message": f"String should have at most {MAX_VERSION_LENGTH} characters",
                    "type": "string_too_long",
                }
            ],
        )
    return version


# The prediction routes read their state and parameters themselves (see pinned_version): they are
# the hot path, and FastAPI's dependency and parameter machinery is measurable there.
@router.post("/predict", **openapi.PREDICT)
async def predict(request: Request) -> Response:
    started = time.perf_counter()
    state: ServiceState = request.app.state.service
    version = pinned_version(request)
    state.check_ready(version)  # 503 or 404 before the body is read
    settings = state.settings
    upload = await read_single_image(request, settings.max_upload_bytes)
    # Held until the answer is made: a version being swapped out finishes the requests it took.
    with state.serve(version) as service:
        prediction = await service.classify_one(EncodedImage(upload.data, upload.filename), started)
        return answer_json(single_answer(prediction, service.model.metadata.class_names))


@router.post("/predict/batch", **openapi.PREDICT_BATCH)
async def predict_batch(request: Request) -> Response:
    started = time.perf_counter()
    state: ServiceState = request.app.state.service
    version = pinned_version(request)
    state.check_ready(version)
    settings = state.settings
    uploads = await read_image_files(request, settings.max_upload_bytes, settings.max_batch_files)
    with state.serve(version) as service:
        images = [EncodedImage(upload.data, upload.filename) for upload in uploads]
        prediction = await service.classify_many(images, started)
        filenames = [upload.filename for upload in uploads]
        return answer_json(batch_answer(prediction, service.model.metadata.class_names, filenames))


@router.get("/healthz", **openapi.HEALTHZ)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", **openapi.READYZ)
async def readyz(service: ServiceDep) -> Readiness:
    threads = runtime_thread_count()  # as the runtime was configured (the CPU count is cached)
    model = service.model
    return Readiness(
        status="ready",
        version=str(service.version),
        model_version=model.metadata.version,
        runtime=model.runtime_name,
        pet_threshold=model.pet_threshold,
        pet_threshold_source=model.pet_threshold_source,
        queue_depth=service.batcher.queue_depth,
        threads=Threads(count=threads.count, source=threads.source),
    )


@router.get("/metadata", **openapi.METADATA)
async def metadata(state: StateDep, version: VersionQuery = None) -> dict[str, Any]:
    service = state.require_ready(version)
    assert state.versions is not None  # require_ready raises otherwise
    return {
        **service.model.metadata.public_document(),
        # How it is served: the runtime answering and the pet threshold in force for it.
        "serving": {
            "runtime": service.model.runtime_name,
            "pet_threshold": service.model.pet_threshold,
            "pet_threshold_source": service.model.pet_threshold_source,
            "version": str(service.version),
        },
        "repository": state.versions.describe(),
    }


@router.get("/metrics", response_class=Response, **openapi.METRICS)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
