"""The V2 model repository extension: the control plane of app/model_versions.py, behind a bearer token.

- `GET|POST /v2/repository/index`: every version seen, `[{"name", "version", "state", "reason"}]`
  (states READY, LOADING, UNLOADING, UNAVAILABLE, as Triton reports them)
- `POST /v2/repository/models/catdog/load`: look at the repository now (new, removed, changed
  versions; serving.json), retrying refused versions; `{"parameters": {"config": "<serving.json>"}}`
  applies that configuration instead (it stands until serving.json changes): a rollback is
  `{"default_version": 2}`. 200 `{}` when every version it wants serves, else 400 naming what did not.
- `POST /v2/repository/models/catdog/unload`: unload every version; the service is not ready until
  the next load call.

Off (403) unless CATDOG_CONTROL_TOKEN is set; then every call needs `Authorization: Bearer <token>`
(401 otherwise). The token is compared in constant time and appears in no log line or answer.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import APIError, InvalidRequestError, ServiceNotReadyError
from app.model_versions import ModelVersions, VersionState
from app.protocols.common import check_model, read_body
from app.repository_config import ServingConfigError, parse_serving_config
from app.service import ServiceState
from catdog.repository import MODEL_NAME

router = APIRouter(prefix="/v2/repository", tags=["Model repository (V2 extension)"])

# Load requests are a few hundred bytes; serving.json is bounded at 64 KiB.
MAX_CONTROL_BODY = 128 * 1024
_TRITON_STATES = {
    VersionState.AVAILABLE: "READY",
    VersionState.LOADING: "LOADING",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.UNAVAILABLE: "UNAVAILABLE",
}


class IndexEntry(BaseModel):
    name: str = Field(examples=[MODEL_NAME])
    version: str = Field(examples=["2"])
    state: str = Field(examples=["READY"])
    reason: str = Field(examples=[""])


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ready: bool = False


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    config: str | None = Field(default=None, description="A serving.json document, as a string")


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    parameters: LoadParameters = LoadParameters()


class RepositoryError(BaseModel):
    model_config = ConfigDict(title="RepositoryErrorBody")
    error: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Invalid request, or a version it wants was refused",
        401: "No valid bearer token",
        403: "The repository API is off (no CATDOG_CONTROL_TOKEN)",
        404: "No such model",
        503: "Not started yet",
    }
    return {code: {"model": RepositoryError, "description": descriptions[code]} for code in codes}


NameParam = Annotated[str, Path(description="Model name", examples=[MODEL_NAME])]


def _authorize(request: Request) -> ModelVersions:
    state: ServiceState = request.app.state.service
    token = state.settings.control_token
    if token is None:
        raise APIError(
            403,
            "repository_off",
            "the model repository API is off: set CATDOG_CONTROL_TOKEN to turn it on",
        )
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    # Digests first: compare_digest's time then depends on neither the token's length nor its bytes.
    expected = hashlib.sha256(token.get_secret_value().encode()).digest()
    offered = hashlib.sha256(given.strip().encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
        raise APIError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="catdog"'},
        )
    if state.versions is None:
        raise ServiceNotReadyError("the service is starting", state.settings.retry_after_seconds)
    return state.versions


def _index(versions: ModelVersions, ready_only: bool) -> list[dict[str, str]]:
    return [
        IndexEntry(
            name=MODEL_NAME,
            version=str(status.number),
            state=_TRITON_STATES[status.state],
            reason=status.reason,
        ).model_dump()
        for status in versions.index()
        if not ready_only or status.state is VersionState.AVAILABLE
    ]


_INDEX_DOC: dict[str, Any] = {
    "summary": "Every model version seen, with its state",
    "response_model": list[IndexEntry],
    "responses": _errors(401, 403),
}


@router.get("/index", **_INDEX_DOC)
async def index(request: Request) -> Response:
    return JSONResponse(_index(_authorize(request), ready_only=False))


@router.post("/index", **_INDEX_DOC)
async def index_post(request: Request) -> Response:
    # Triton's form: the body may ask for `{"ready": true}` versions only.
    versions = _authorize(request)
    body = await read_body(request, MAX_CONTROL_BODY)
    try:
        wanted = IndexRequest.model_validate_json(body) if body.strip() else IndexRequest()
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid index request: {exc.errors()[0]['msg']}") from None
    return JSONResponse(_index(versions, ready_only=wanted.ready))


@router.post(
    "/models/{name}/load",
    summary="Look at the repository now, or apply a serving.json given here",
    responses={200: {"description": "Every version wanted serves"}, **_errors(400, 401, 403, 404)},
)
async def load(request: Request, name: NameParam) -> Response:
    versions = _authorize(request)
    check_model(name, None, "model")
    body = await read_body(request, MAX_CONTROL_BODY)
    try:
        document = LoadRequest.model_validate_json(body) if body.strip() else LoadRequest()
        config = (
            None if document.parameters.config is None else parse_serving_config(document.parameters.config)
        )
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid load request: {exc.errors()[0]['msg']}") from None
    except ServingConfigError as exc:
        raise InvalidRequestError(f"invalid config: {exc}") from None
    problems = await versions.reconcile(force=True, config=config)
    if problems:
        raise InvalidRequestError("; ".join(problems))
    return JSONResponse({})


@router.post(
    "/models/{name}/unload",
    summary="Unload every version: not ready until the next load call",
    responses={200: {"description": "Unloaded"}, **_errors(401, 403, 404)},
)
async def unload(request: Request, name: NameParam) -> Response:
    versions = _authorize(request)
    check_model(name, None, "model")
    await read_body(request, MAX_CONTROL_BODY)  # Triton's optional parameters: accepted, unused
    await versions.unload_all()
    return JSONResponse({})
