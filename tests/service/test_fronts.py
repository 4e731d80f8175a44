"""The app reads the registry of fronts (app/fronts.py): a front added there is routed, size-limited,
answered in its own error shape before and after its handlers, and documented without the 422 it
never sends; nothing else needs to change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from app import fronts
from app.errors import APIError
from app.main import create_app
from app.settings import Settings

teapots = APIRouter(prefix="/teapot")


class TeapotError(APIError):
    def __init__(self, strength: int) -> None:
        super().__init__(418, "teapot", f"too strong: {strength}", headers={"Retry-After": "3"})


@teapots.post("/brew")
async def brew(request: Request, strength: int) -> dict[str, int]:
    await request.body()
    if strength > 5:
        raise TeapotError(strength)
    return {"strength": strength}


TEAPOT = fronts.Front(
    name="teapot",
    paths=("/teapot/",),
    routers=(teapots,),
    error_body=lambda error: {"teapot": error.code, "said": error.message},
    body_limits=(("/teapot/", lambda settings: settings.max_batch_files),),
    sends_validation_errors=False,
)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(fronts, "FRONTS", (*fronts.FRONTS, TEAPOT))
    # No lifespan: no model is loaded, and none is needed.
    yield TestClient(
        create_app(Settings(auto_train=False, max_batch_files=10)), raise_server_exceptions=False
    )


def test_a_new_front_is_routed_and_its_errors_take_its_shape(client: TestClient) -> None:
    assert client.post("/teapot/brew?strength=2").json() == {"strength": 2}
    brewed = client.post("/teapot/brew?strength=9")
    assert (brewed.status_code, brewed.headers["retry-after"]) == (418, "3")
    assert brewed.json() == {"teapot": "teapot", "said": "too strong: 9"}
    # Raised before any handler of the front: routing, 405, 422.
    assert client.get("/teapot/kettle").json() == {"teapot": "not_found", "said": "Not Found"}
    wrong = client.get("/teapot/brew")
    assert (wrong.status_code, wrong.json()["teapot"]) == (405, "method_not_allowed")
    invalid = client.post("/teapot/brew?strength=lots")
    assert (invalid.status_code, invalid.json()["teapot"]) == (422, "validation_error")
    # The other fronts keep theirs.
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    assert client.get("/v2/nope").json() == {"error": "Not Found"}


def test_a_new_front_has_its_own_body_limit(client: TestClient) -> None:
    assert client.post("/teapot/brew?strength=1", content=b"x" * 10).status_code == 200
    declared = client.post("/teapot/brew?strength=1", content=b"x" * 11)
    assert declared.status_code == 413
    assert declared.json() == {
        "teapot": "payload_too_large",
        "said": "request body of 11 bytes is over the limit of 10 bytes for this endpoint",
    }
    # Without a Content-Length: counted as it streams, cut off inside the handler.
    streamed = client.post("/teapot/brew?strength=1", content=iter([b"x" * 6, b"x" * 6]))
    assert streamed.status_code == 413
    assert streamed.json() == {
        "teapot": "payload_too_large",
        "said": "request body is over the limit of 10 bytes for this endpoint",
    }


def test_openapi_leaves_out_the_422_a_front_never_sends(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "422" not in paths["/teapot/brew"]["post"]["responses"]
    assert "422" in paths["/metadata"]["get"]["responses"]
