"""The registry of fronts (app/fronts.py): every path has one front, every route is its front's, the body
limits follow the settings, and any error renders in each front's shape (tests/service/test_fronts.py:
the app reads the registry)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.routing import APIRoute

from app import fronts
from app.errors import APIError, error_response, render
from app.fronts import FRONTS, HTTP_API, KSERVE_V2, MULTIPART_OVERHEAD, TF_SERVING, front_of
from app.logs import reset_request_id, set_request_id
from app.protocols import common, repository
from app.settings import Settings


class TeapotError(APIError):
    """An error type no front knows of."""

    def __init__(self) -> None:
        super().__init__(418, "teapot", "short and stout", {"spout": 1}, headers={"Retry-After": "7"})


def test_fronts_have_distinct_names_and_no_path_is_declared_twice() -> None:
    assert len({front.name for front in FRONTS}) == len(FRONTS)
    declared = [path for front in FRONTS for path in front.paths]
    assert len(set(declared)) == len(declared)


def test_every_route_belongs_to_the_front_that_declares_its_router() -> None:
    for front in FRONTS:
        assert front.routers, front.name
        for router in front.routers:
            for route in router.routes:
                assert isinstance(route, APIRoute)
                assert front_of(route.path) is front, (route.path, front.name, front_of(route.path).name)


@pytest.mark.parametrize(
    ("path", "front"),
    [
        ("/", HTTP_API),
        ("/predict", HTTP_API),
        ("/nope", HTTP_API),
        ("/v2foo", HTTP_API),
        ("/v1/models", HTTP_API),
        ("/v2", KSERVE_V2),
        ("/v2/", KSERVE_V2),
        ("/v2/nope", KSERVE_V2),
        ("/v2/repository/index", KSERVE_V2),
        ("/v1/models/", TF_SERVING),
        ("/v1/models/resnet:predict", TF_SERVING),
    ],
)
def test_paths_no_route_serves_still_have_a_front(path: str, front: fronts.Front) -> None:
    assert front_of(path) is front


def test_body_limits_follow_the_settings() -> None:
    settings = Settings(max_upload_bytes=1_000, max_batch_request_bytes=30_000)
    protocol = 30_000 * 4 // 3 + 64 * 1024
    assert common.body_limit(settings) == protocol  # what the protocol handlers read bodies with
    expected = {
        "/predict": 1_000 + MULTIPART_OVERHEAD,
        "/predict/": 1_000 + MULTIPART_OVERHEAD,
        "/predict/batch": 30_000 + MULTIPART_OVERHEAD,
        "/healthz": fronts.DEFAULT_BODY_LIMIT,
        "/v2": fronts.DEFAULT_BODY_LIMIT,
        "/v2/models": fronts.DEFAULT_BODY_LIMIT,
        "/v2/models/catdog/infer": protocol,
        "/v2/models/catdog/versions/2/infer": protocol,
        "/v1/models/catdog:predict": protocol,
        "/v1/models/catdog/labels/stable:predict": protocol,
        "/v2/repository/models/catdog/load": repository.MAX_CONTROL_BODY,
    }
    assert {path: fronts.body_limit(settings, path) for path in expected} == expected


def _body(response: Any) -> Any:
    return json.loads(bytes(response.body))


@pytest.mark.parametrize(
    "path", ["/predict", "/v2/models/catdog/infer", "/v2/repository/index", "/v1/models/x"]
)
def test_any_error_renders_in_the_shape_of_its_front(path: str) -> None:
    error = TeapotError()
    token = set_request_id("brew-1")
    try:
        response = render(error, path)
        same = error_response(418, "teapot", "short and stout", {"spout": 1}, {"Retry-After": "7"}, path=path)
        declared = front_of(path).error_body(error)
    finally:
        reset_request_id(token)
    assert response.status_code == 418
    assert response.headers["retry-after"] == "7"
    if front_of(path) is HTTP_API:
        assert _body(response) == {
            "error": {"code": "teapot", "message": "short and stout", "details": {"spout": 1}},
            "request_id": "brew-1",
        }
    else:
        assert _body(response) == {"error": "short and stout"}
    assert _body(response) == declared
    # The errors raised before a handler runs (size limit, admission, routing) take the same way.
    assert _body(same) == _body(response)


def test_the_registry_decides_the_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A front declared here is the one that renders: no shape is chosen anywhere else."""
    teapot = fronts.Front(
        name="teapot", paths=("/v2/teapot/",), routers=(), error_body=lambda error: {"teapot": error.code}
    )
    monkeypatch.setattr(fronts, "FRONTS", (*FRONTS, teapot))
    assert _body(render(TeapotError(), "/v2/teapot/pour")) == {"teapot": "teapot"}
    assert _body(render(TeapotError(), "/v2/models/catdog")) == {"error": "short and stout"}
