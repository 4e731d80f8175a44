"""The model repository in-process: versions swapped, pinned, refused, rolled back, and its control plane.

The app serves a repository of the tiny test models (tests/conftest.py): version 1 has no pet head,
the tiny pet model has one, so an answer also shows by its content which version gave it. Polling is
off here; the load call (or the app's own ModelVersions) triggers each look at the repository.
tests/test_model_repository_live.py does the same on a real server under load.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.images import red_png

TOKEN = "repository-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOAD = "/v2/repository/models/catdog/load"
RED_B64 = base64.b64encode(red_png()).decode()


def add_version(model_folder: Path, number: int, source: Path) -> Path:
    """Copy an export in as version `number`, the way it should be done: aside, then one rename."""
    staging = model_folder / f".incoming-{number}"
    shutil.copytree(source, staging)
    final = model_folder / str(number)
    os.rename(staging, final)
    return final


def write_config(model_folder: Path, document: dict[str, Any]) -> None:
    (model_folder / "serving.json").write_text(json.dumps(document))


@pytest.fixture
def model_folder(tmp_path: Path, tiny_model_dir: Path) -> Path:
    folder = tmp_path / "repository" / "catdog"
    folder.mkdir(parents=True)
    add_version(folder, 1, tiny_model_dir)
    return folder


@pytest.fixture
def repo_client(make_client: Callable[..., TestClient], model_folder: Path) -> Callable[..., TestClient]:
    def factory(**overrides: Any) -> TestClient:
        settings = {
            "model_repository": model_folder.parent,
            "repository_poll_seconds": 0,
            "control_token": TOKEN,
            **overrides,
        }
        return make_client(**settings)

    return factory


def predict(client: TestClient, version: str | None = None) -> Any:
    params = {} if version is None else {"version": version}
    return client.post("/predict", params=params, files={"file": ("red.png", red_png(), "image/png")})


def answered_by(client: TestClient, version: str | None = None) -> str:
    response = predict(client, version)
    assert response.status_code == 200, response.text
    answer = response.json()
    # Version 1 is the tiny model without a pet head; the pet model answers pet_score.
    assert (answer["pet_score"] is None) == (answer["model_version"] == "tiny-test-1")
    return str(answer["version"])


def load(client: TestClient, config: dict[str, Any] | None = None) -> Any:
    body = None if config is None else {"parameters": {"config": json.dumps(config)}}
    return client.post(LOAD, headers=AUTH, json=body)


def index(client: TestClient) -> dict[str, tuple[str, str]]:
    response = client.get("/v2/repository/index", headers=AUTH)
    assert response.status_code == 200, response.text
    return {entry["version"]: (entry["state"], entry["reason"]) for entry in response.json()}


def metric(client: TestClient, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_new_version_is_loaded_checked_warmed_and_made_the_default(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    client = repo_client()
    assert answered_by(client) == "1"
    assert client.get("/readyz").json()["version"] == "1"

    add_version(model_folder, 2, tiny_pet_model_dir)
    assert answered_by(client) == "1"  # nothing changes before the repository is looked at
    assert load(client).status_code == 200
    assert answered_by(client) == "2"
    assert client.get("/readyz").json()["version"] == "2"
    # The default policy serves the latest version only: 1 was unloaded once 2 was ready.
    assert index(client) == {"1": ("UNAVAILABLE", "not selected by the version policy"), "2": ("READY", "")}
    assert predict(client, "1").status_code == 404

    assert metric(client, "catdog_model_default_version") == 2
    assert metric(client, "catdog_model_version_state", version="2", state="AVAILABLE") == 1
    assert metric(client, "catdog_model_version_state", version="1", state="UNAVAILABLE") == 1
    assert metric(client, "catdog_model_version_events_total", event="loaded") == 2
    assert metric(client, "catdog_model_version_events_total", event="unloaded") == 1
    memory = metric(client, "catdog_model_version_memory_bytes", version="2")
    assert memory is not None and memory >= 0
    described = client.get("/metadata").json()["repository"]
    assert described["default_version"] == "2" and described["repository"] is True
    assert [(v["version"], v["state"], v["model_version"]) for v in described["versions"]] == [
        ("1", "UNAVAILABLE", "tiny-test-1"),
        ("2", "AVAILABLE", "tiny-pet-1"),
    ]
    assert str(model_folder.parent) not in json.dumps(described)  # no machine paths published


def test_versions_are_pinned_by_number_or_label_on_every_front(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    add_version(model_folder, 2, tiny_pet_model_dir)
    write_config(model_folder, {"version_policy": {"all": {}}, "labels": {"stable": 1, "canary": 2}})
    client = repo_client()
    assert answered_by(client) == "2"
    assert [answered_by(client, pin) for pin in ("1", "2", "stable", "canary")] == ["1", "2", "1", "2"]
    batch = client.post(
        "/predict/batch", params={"version": "stable"}, files=[("files", ("a.png", red_png(), "image/png"))]
    )
    assert batch.status_code == 200 and batch.json()["version"] == "1"
    for missing in ("7", "beta"):
        response = predict(client, missing)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "version_not_found"
    too_long = predict(client, "v" * 65)
    assert too_long.status_code == 422 and too_long.json()["error"]["details"][0]["location"] == [
        "query",
        "version",
    ]
    assert client.get("/metadata", params={"version": "1"}).json()["serving"]["version"] == "1"

    # KServe V2: /versions/{v} addresses a version; the answer says which one answered.
    request = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [RED_B64]}]}
    for version in ("1", "2"):
        answer = client.post(f"/v2/models/catdog/versions/{version}/infer", json=request)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == version
    assert client.post("/v2/models/catdog/infer", json=request).json()["model_version"] == "2"
    assert client.get("/v2/models/catdog").json()["versions"] == ["1", "2"]
    assert client.get("/v2/models/catdog/versions/1/ready").json() == {"name": "catdog", "ready": True}
    missing = client.get("/v2/models/catdog/versions/7/ready")
    assert missing.status_code == 404 and "not found" in missing.json()["error"]

    # TF Serving: /versions/{v} and /labels/{label}; the version is in X-Model-Version.
    instances = {"instances": [{"b64": RED_B64}]}
    for path, version in (
        ("/v1/models/catdog:predict", "2"),
        ("/v1/models/catdog/versions/1:predict", "1"),
        ("/v1/models/catdog/labels/stable:predict", "1"),
        ("/v1/models/catdog/labels/canary:predict", "2"),
    ):
        answer = client.post(path, json=instances)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["x-model-version"] == version, path
    spec = client.get("/v1/models/catdog/labels/stable/metadata").json()["model_spec"]
    assert spec["version"] == "1"
    status = client.get("/v1/models/catdog").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE"), ("2", "AVAILABLE")]
    assert client.get("/v1/models/catdog/labels/canary").json()["model_version_status"][0]["version"] == "2"
    unknown = client.post("/v1/models/catdog/labels/beta:predict", json=instances)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Servable not found for request: Labeled(catdog, beta)"}


def test_rollback_is_one_file_change_or_one_call(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    add_version(model_folder, 2, tiny_pet_model_dir)
    write_config(model_folder, {"version_policy": {"latest": {"num_versions": 2}}})
    client = repo_client()
    assert answered_by(client) == "2"

    # One file change (picked up by the poller; here by a load call).
    write_config(model_folder, {"version_policy": {"latest": {"num_versions": 2}}, "default_version": 1})
    assert load(client).status_code == 200
    assert answered_by(client) == "1"
    assert client.get("/metadata").json()["repository"]["config_origin"] == "serving.json"

    # One call: a serving.json in the load request; it stands until the file changes.
    assert (
        load(client, {"version_policy": {"latest": {"num_versions": 2}}, "default_version": 2}).status_code
        == 200
    )
    assert answered_by(client) == "2"
    assert load(client).status_code == 200
    assert answered_by(client) == "2"  # the file did not change: the call's configuration stands
    assert client.get("/metadata").json()["repository"]["config_origin"] == "load request"


def test_removing_the_newest_version_rolls_back_to_the_one_before(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    add_version(model_folder, 2, tiny_pet_model_dir)
    client = repo_client()
    assert answered_by(client) == "2"
    assert "1" not in index(client)  # latest 1: version 1 was never loaded
    shutil.rmtree(model_folder / "2")
    # Version 2 keeps answering until version 1 is loaded: the default is never left empty.
    assert answered_by(client) == "2"
    assert load(client).status_code == 200
    assert answered_by(client) == "1"
    assert index(client) == {"1": ("READY", "")}


def test_a_broken_version_is_refused_and_the_default_keeps_serving(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    client = repo_client()
    broken = add_version(model_folder, 2, tiny_pet_model_dir)
    (broken / "metadata.json").write_text('{"class_names": ["cat", "dog"]')  # cut short
    refused = load(client)
    assert refused.status_code == 400
    assert "version 2 refused" in refused.json()["error"]
    assert answered_by(client) == "1"
    state, reason = index(client)["2"]
    assert state == "UNAVAILABLE" and reason.startswith("refused: ") and "metadata.json" in reason
    assert str(model_folder.parent) not in reason
    assert metric(client, "catdog_model_version_events_total", event="refused") == 1

    # Classes other than the contract's: refused too.
    shutil.copy(tiny_pet_model_dir / "metadata.json", broken / "metadata.json")
    metadata = json.loads((broken / "metadata.json").read_text())
    metadata["class_names"] = ["dog", "cat"]
    (broken / "metadata.json").write_text(json.dumps(metadata))
    refused = load(client)
    assert refused.status_code == 400 and "class_names must be" in refused.json()["error"]
    assert answered_by(client) == "1"

    # Fixed files: the next look loads it.
    shutil.copy(tiny_pet_model_dir / "metadata.json", broken / "metadata.json")
    assert load(client).status_code == 200
    assert answered_by(client) == "2"


def test_an_invalid_serving_json_leaves_the_configuration_in_force(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    add_version(model_folder, 2, tiny_pet_model_dir)
    write_config(model_folder, {"default_version": 1})
    client = repo_client()
    assert answered_by(client) == "1"
    write_config(model_folder, {"default_version": "two"})
    response = load(client)
    assert response.status_code == 400 and "serving.json ignored" in response.json()["error"]
    assert answered_by(client) == "1"
    described = client.get("/metadata").json()["repository"]
    assert "default_version" in described["config_error"]
    bad_call = load(client, {"version_policy": {"newest": {}}})
    assert bad_call.status_code == 400 and bad_call.json()["error"].startswith("invalid config")


def test_a_request_in_flight_finishes_on_the_version_that_took_it(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    client = repo_client(shutdown_timeout_seconds=30)
    versions = client.app.state.service.versions  # type: ignore[attr-defined]
    portal = client.portal
    assert portal is not None
    held = portal.call(versions.acquire, None)  # what a request does when it starts
    assert held.number == 1

    add_version(model_folder, 2, tiny_pet_model_dir)
    loading = threading.Thread(target=load, args=(client,))
    loading.start()
    deadline = time.monotonic() + 60
    while answered_by(client) != "2" and time.monotonic() < deadline:
        time.sleep(0.05)
    # New requests go to 2; version 1 waits for the request holding it, its batcher still running.
    assert answered_by(client) == "2"
    time.sleep(0.3)
    assert loading.is_alive()
    assert index(client)["1"][0] == "UNLOADING" and held.batcher.running
    portal.call(versions.release, held)
    loading.join(timeout=30)
    assert not loading.is_alive()
    assert index(client)["1"][0] == "UNAVAILABLE" and not held.batcher.running


def test_loaded_versions_are_bounded(
    repo_client: Callable[..., TestClient], model_folder: Path, tiny_pet_model_dir: Path
) -> None:
    add_version(model_folder, 2, tiny_pet_model_dir)
    add_version(model_folder, 3, tiny_pet_model_dir)
    write_config(model_folder, {"version_policy": {"all": {}}})
    client = repo_client(max_loaded_versions=2)
    states = index(client)
    assert (states["3"][0], states["2"][0], states["1"][0]) == ("READY", "READY", "UNAVAILABLE")
    assert "CATDOG_MAX_LOADED_VERSIONS" in states["1"][1]


def test_the_control_plane_needs_the_token(
    repo_client: Callable[..., TestClient], make_client: Callable[..., TestClient]
) -> None:
    closed = make_client()  # no CATDOG_CONTROL_TOKEN: the repository API is off
    for method, path in (("GET", "/v2/repository/index"), ("POST", "/v2/repository/index"), ("POST", LOAD)):
        response = closed.request(method, path, headers=AUTH)
        assert response.status_code == 403 and "CATDOG_CONTROL_TOKEN" in response.json()["error"]
    assert "model_repository" not in closed.get("/v2").json()["extensions"]

    client = repo_client()
    assert "model_repository" in client.get("/v2").json()["extensions"]
    offered = ("", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}")
    for headers in [{"Authorization": value} if value else {} for value in offered]:
        for method, path in (("GET", "/v2/repository/index"), ("POST", LOAD), ("POST", LOAD[:-4] + "unload")):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in response.text
    assert answered_by(client) == "1"  # prediction stays open
    ready_only = client.post("/v2/repository/index", headers=AUTH, json={"ready": True})
    assert ready_only.json() == [{"name": "catdog", "version": "1", "state": "READY", "reason": ""}]
    assert client.post("/v2/repository/models/resnet/load", headers=AUTH).status_code == 404


def test_unload_stops_serving_until_the_next_load(repo_client: Callable[..., TestClient]) -> None:
    client = repo_client()
    assert client.post("/v2/repository/models/catdog/unload", headers=AUTH).status_code == 200
    assert client.get("/readyz").status_code == 503
    response = predict(client)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert index(client) == {"1": ("UNAVAILABLE", "unloaded by request")}
    assert load(client).status_code == 200
    assert answered_by(client) == "1"


def test_one_export_named_like_a_version_is_served_as_that_version(
    make_client: Callable[..., TestClient], tmp_path: Path, tiny_model_dir: Path
) -> None:
    seven = tmp_path / "7"
    shutil.copytree(tiny_model_dir, seven)
    client = make_client(model_dir=seven)
    assert client.get("/readyz").json()["version"] == "7"
    assert answered_by(client) == "7"
    assert client.post("/v2/models/catdog/versions/7/infer", json={
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [RED_B64]}]
    }).json()["model_version"] == "7"  # fmt: skip
