"""TensorFlow Serving's REST API, checked against the request and response shapes of TF Serving's
REST documentation (tensorflow_serving/g3doc/api_rest.md): model status, metadata, `:predict` in the
row (`instances` -> `predictions`) and columnar (`inputs` -> `outputs`) formats, binary values as
`{"b64": ...}`, and errors as `{"error": "<message>"}`.
"""

from __future__ import annotations

import base64
import gzip
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import real_photos
from tests.images import BLUE, RED, blue_jpeg, red_png

PREDICT = "/v1/models/catdog:predict"


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def pixels(color: tuple[int, int, int], height: int = 20, width: int = 30) -> list[Any]:
    return np.full((height, width, 3), color, np.uint8).tolist()


def test_model_status_has_the_documented_shape(client: TestClient) -> None:
    # The docs' example: {"model_version_status": [{"version": "123", "state": "AVAILABLE",
    #   "status": {"error_code": "OK", "error_message": ""}}]}
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert client.get("/v1/models/catdog").json() == expected
    assert client.get("/v1/models/catdog/versions/1").json() == expected


def test_metadata_describes_the_serving_default_signature(pet_client: TestClient) -> None:
    response = pet_client.get("/v1/models/catdog/metadata")
    assert response.status_code == 200
    document = response.json()
    assert document["model_spec"] == {"name": "catdog", "signature_name": "", "version": "1"}
    signature = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert signature["inputs"]["images"]["dtype"] == "DT_UINT8"
    dims = [d["size"] for d in signature["inputs"]["images"]["tensor_shape"]["dim"]]
    assert dims == ["-1", "-1", "-1", "3"]
    assert set(signature["outputs"]) == {"probabilities", "label", "pet_score", "is_cat_or_dog"}
    assert pet_client.get("/v1/models/catdog/versions/1/metadata").json() == document


def test_row_format_instances_answer_predictions(client: TestClient) -> None:
    # "When there is only one named input, specify the value of instances key to be the value of
    # the input", binary values as {"b64": ...}; several outputs -> a list of objects.
    response = client.post(PREDICT, json={"instances": [b64(red_png()), b64(blue_jpeg())]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == ["cat", "dog"]
    assert set(predictions[0]) == {"probabilities", "label"}
    assert predictions[0]["probabilities"][0] > 0.9
    assert sum(predictions[1]["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_row_format_with_named_inputs_and_signature(client: TestClient) -> None:
    body = {
        "signature_name": "serving_default",
        "instances": [{"image_bytes": b64(blue_jpeg())}, {"image_bytes": b64(red_png())}],
    }
    predictions = client.post("/v1/models/catdog/versions/1:predict", json=body).json()["predictions"]
    assert [p["label"] for p in predictions] == ["dog", "cat"]


def test_columnar_format_inputs_answer_outputs(pet_client: TestClient) -> None:
    # "The value for inputs key can either a single input tensor or a map of input name to tensors";
    # several outputs -> an object keyed by output name.
    named = pet_client.post(PREDICT, json={"inputs": {"image_bytes": [b64(red_png()), b64(blue_jpeg())]}})
    assert named.status_code == 200, named.text
    outputs = named.json()["outputs"]
    assert outputs["label"] == ["cat", "dog"]
    assert len(outputs["probabilities"]) == 2 and len(outputs["probabilities"][0]) == 2
    assert outputs["is_cat_or_dog"] == [True, True]
    assert all(0.5 < score <= 1 for score in outputs["pet_score"])
    bare = pet_client.post(PREDICT, json={"inputs": [b64(blue_jpeg())]}).json()["outputs"]
    assert bare["label"] == ["dog"]
    single = pet_client.post(PREDICT, json={"inputs": b64(red_png())}).json()["outputs"]
    assert single["label"] == ["cat"]


def test_pixel_tensors_in_both_formats(client: TestClient) -> None:
    # "Tensors are expressed naturally in nested notation": [height][width][3] per instance.
    row = client.post(PREDICT, json={"instances": [pixels(RED), pixels(BLUE)]})
    assert [p["label"] for p in row.json()["predictions"]] == ["cat", "dog"]
    columnar = client.post(PREDICT, json={"inputs": {"images": [pixels(BLUE), pixels(RED)]}})
    assert columnar.json()["outputs"]["label"] == ["dog", "cat"]
    one_image = client.post(PREDICT, json={"inputs": pixels(BLUE)})
    assert one_image.json()["outputs"]["label"] == ["dog"]


def test_gzip_request_body(client: TestClient) -> None:
    body = gzip.compress(b'{"instances": [%s]}' % str(b64(red_png())).replace("'", '"').encode())
    response = client.post(PREDICT, content=body, headers={"Content-Encoding": "gzip"})
    assert response.json()["predictions"][0]["label"] == "cat"


def test_unknown_model_is_404_as_in_the_docs(client: TestClient) -> None:
    # The docs' example: POST /v1/models/half:predict -> 404
    #   { "error": "Servable not found for request: Latest(half)" }
    response = client.post("/v1/models/half:predict", json={"instances": [1.0, 5.0]})
    assert response.status_code == 404
    assert response.json() == {"error": "Servable not found for request: Latest(half)"}
    assert client.get("/v1/models/half").status_code == 404
    version = client.get("/v1/models/catdog/versions/7")
    assert version.status_code == 404
    assert version.json() == {"error": "Servable not found for request: Specific(catdog, 7)"}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        # The docs' half_plus_three request: numbers are not images.
        ({"instances": [1.0, 2.0, 5.0]}, 400, "integers 0..255"),
        ({"instances": ["aGVsbG8="]}, 400, '{"b64": "..."}'),
        ({"instances": [{"b64": "%%%"}]}, 400, "invalid base64"),
        ({"instances": [b64(b"hello")]}, 400, "not a decodable image"),
        ({"instances": []}, 400, "no images"),
        ({"instances": {"b64": "x"}}, 400, "must be a list"),
        ({"instances": [b64(red_png())], "inputs": [b64(red_png())]}, 400, "exactly one of"),
        ({}, 400, "exactly one of"),
        ({"signature_name": "classify", "instances": [b64(red_png())]}, 400, "not found in signature def"),
        ({"instances": [b64(red_png()), pixels(RED)]}, 400, "mixed instances"),
        ({"instances": [pixels(RED, 10, 10), pixels(RED, 12, 12)]}, 400, "regular nested list"),
        ({"instances": [{"tag": "foo"}]}, 400, "expected one named input"),
        ({"instances": [b64(red_png())] * 40}, 413, "over the limit of 32"),
        ([1, 2], 400, "JSON object"),
        ({"signature_name": None, "instances": [b64(red_png())]}, 400, "must be a string"),
    ],
)
def test_bad_requests_get_tf_serving_errors(client: TestClient, body: Any, status: int, message: str) -> None:
    response = client.post(PREDICT, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str), "TF Serving errors are {'error': '<message>'}"
    assert message in error


def test_malformed_json(client: TestClient) -> None:
    response = client.post(PREDICT, content=b'{"instances": [', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "JSON Parse error" in response.json()["error"]


def test_real_photos_through_the_default_model(default_server: str) -> None:
    photos = real_photos(per_class=2)
    body = {"instances": [b64(path.read_bytes()) for path, _ in photos]}
    response = httpx.post(f"{default_server}{PREDICT}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == [label for _, label in photos]
    assert all(p["is_cat_or_dog"] for p in predictions)


@pytest.mark.parametrize("path", [PREDICT, "/v2/models/catdog/infer"])
def test_errors_before_the_protocol_handler_have_the_protocol_shape(make_client: Any, path: str) -> None:
    """Size limit, admission and routing answer before any protocol code runs; their clients still
    read `{"error": "<message>"}`, while /predict keeps the service's own shape."""
    client = make_client(max_batch_request_bytes=1000)
    too_big = client.post(
        path, content=b"{" + b" " * 2_000_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert too_big.status_code == 413
    assert isinstance(too_big.json()["error"], str) and "limit" in too_big.json()["error"]

    wrong_method = client.delete(path)
    assert wrong_method.status_code == 405
    assert isinstance(wrong_method.json()["error"], str)

    overloaded = make_client(max_in_flight=1)
    controller = overloaded.app.state.admission  # type: ignore[attr-defined]
    assert controller.try_enter()  # one request in flight: the next is shed before its body
    try:
        shed = overloaded.post(path, json={})
    finally:
        controller.leave()
    assert shed.status_code == 503 and shed.headers["Retry-After"]
    assert isinstance(shed.json()["error"], str) and "capacity" in shed.json()["error"]

    service_shape = overloaded.delete("/predict").json()["error"]
    assert service_shape["code"] == "method_not_allowed"
