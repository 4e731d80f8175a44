"""HTTP endpoints: read the request, call the prediction service, return its answer.

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
from app.schemas import Health, Readiness
from app.service import PredictionService, ServiceState
from app.uploads import read_image_files, read_single_image

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


def answer_json(answer: BaseModel) -> Response:
    """The service's validated answer as JSON, encoded once. Returned as a model, FastAPI would dump
    it, validate the dump against `response_model` again and encode that: ~0.1 ms more per request
    for the same bytes. The routes keep `response_model` for the OpenAPI schema."""
    return Response(answer.model_dump_json(), media_type="application/json")


VersionQuery = Annotated[
    str | None,
    Query(
        description="The model version (a number) or label to answer with; default: the default version",
        examples=["1"],
        max_length=64,
    ),
]


@router.post("/predict", **openapi.PREDICT)
async def predict(request: Request, state: StateDep, version: VersionQuery = None) -> Response:
    started = time.perf_counter()
    settings = state.require_ready(version).settings  # 503 or 404 before the body is read
    upload = await read_single_image(request, settings.max_upload_bytes)
    # Held until the answer is made: a version being swapped out finishes the requests it took.
    with state.serve(version) as service:
        return answer_json(await service.predict(upload, started))


@router.post("/predict/batch", **openapi.PREDICT_BATCH)
async def predict_batch(request: Request, state: StateDep, version: VersionQuery = None) -> Response:
    started = time.perf_counter()
    settings = state.require_ready(version).settings
    uploads = await read_image_files(request, settings.max_upload_bytes, settings.max_batch_files)
    with state.serve(version) as service:
        return answer_json(await service.predict_batch(uploads, started))


@router.get("/healthz", **openapi.HEALTHZ)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", **openapi.READYZ)
async def readyz(service: ServiceDep) -> Readiness:
    return service.readiness()


@router.get("/metadata", **openapi.METADATA)
async def metadata(state: StateDep, version: VersionQuery = None) -> dict[str, Any]:
    service = state.require_ready(version)
    assert state.versions is not None  # require_ready raises otherwise
    return {
        **service.model.metadata.public_document(),
        "serving": {**service.serving(), "version": str(service.version)},
        "repository": state.versions.describe(),
    }


@router.get("/metrics", response_class=Response, **openapi.METRICS)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
