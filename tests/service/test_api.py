"""API behaviour against a real exported (tiny) SavedModel: answers, and a clear 4xx for every bad input."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from app.logs import json_handler, reset_request_id, set_request_id
from app.settings import Settings
from catdog.contract import ModelMetadata
from catdog.saved_model import ExportedModel, effective_pet_threshold
from tests.conftest import PET_MODEL_THRESHOLD, tiny_pet_score
from tests.images import BLUE, RED, blue_jpeg, encode, red_png, solid, truncated_jpeg


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- answers -------------------------------------------------------------------------------------


def test_predict_multipart_returns_label_probabilities_version_latency(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("cat.png", red_png(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "cat"
    assert set(body["probabilities"]) == {"cat", "dog"}
    assert body["probabilities"]["cat"] > 0.9
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["confidence"] == body["probabilities"]["cat"]
    assert body["model_version"] == "tiny-test-1"
    assert body["latency_ms"] > 0
    assert body["timing"]["batch_size"] >= 1
    # This model has no pet_score output: the fields are there, and null.
    assert body["pet_score"] is None
    assert body["is_cat_or_dog"] is None


def test_predict_raw_image_body(client: TestClient) -> None:
    response = client.post("/predict", content=blue_jpeg(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "dog"


def test_predict_octet_stream_part_is_sniffed(client: TestClient) -> None:
    # curl -F file=@photo sends application/octet-stream when it cannot guess the type.
    response = client.post("/predict", files={"file": ("photo", blue_jpeg(), "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "dog"


def test_predict_batch_keeps_order_and_filenames(client: TestClient) -> None:
    files = [
        ("files", ("a.png", red_png(), "image/png")),
        ("files", ("b.jpg", blue_jpeg(), "image/jpeg")),
        ("files", ("c.gif", solid(RED, fmt="GIF"), "image/gif")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["label"] for p in body["predictions"]] == ["cat", "dog", "cat"]
    assert [p["filename"] for p in body["predictions"]] == ["a.png", "b.jpg", "c.gif"]
    assert [p["index"] for p in body["predictions"]] == [0, 1, 2]
    assert body["model_version"] == "tiny-test-1"
    assert all(p["pet_score"] is None and p["is_cat_or_dog"] is None for p in body["predictions"])


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_predict_accepts_every_mode(client: TestClient, mode: str) -> None:
    image = (
        Image.new("RGB", (40, 30), BLUE).convert(mode)
        if mode != "I;16"
        else Image.new("I;16", (40, 30), 9000)
    )
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    response = client.post("/predict", files={"file": (f"x.{fmt.lower()}", encode(image, fmt), "image/*")})
    assert response.status_code == 200, response.text


# --- "is it a cat or a dog at all?": models with a pet_score output ---------------------------------

DARK_RED = (60, 0, 0)  # still red, so still "cat", but dark: the tiny pet model's stand-in for "not a pet"


def test_pet_model_answers_pet_score_and_is_cat_or_dog(pet_client: TestClient) -> None:
    response = pet_client.post("/predict", files={"file": ("cat.png", red_png(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "tiny-pet-1"
    assert body["label"] == "cat"
    assert body["pet_score"] == pytest.approx(tiny_pet_score(RED), abs=1e-4)
    assert body["is_cat_or_dog"] is True


def test_dark_image_is_not_a_pet_but_still_gets_label_and_probabilities(pet_client: TestClient) -> None:
    response = pet_client.post("/predict", files={"file": ("dark.png", solid(DARK_RED), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pet_score"] == pytest.approx(tiny_pet_score(DARK_RED), abs=1e-4)
    assert body["pet_score"] < PET_MODEL_THRESHOLD
    assert body["is_cat_or_dog"] is False
    # The cat-vs-dog answer is unchanged by the flag.
    assert body["label"] == "cat"
    assert set(body["probabilities"]) == {"cat", "dog"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["confidence"] == body["probabilities"]["cat"]


def test_pet_threshold_setting_overrides_the_models(
    make_client: Callable[..., TestClient], tiny_pet_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bright = ("cat.png", red_png(), "image/png")  # pet_score ~0.86
    dark = ("dark.png", solid(DARK_RED), "image/png")  # pet_score ~0.03
    monkeypatch.setenv("CATDOG_PET_THRESHOLD", "0.9")
    strict = make_client(model_dir=tiny_pet_model_dir)
    assert strict.post("/predict", files={"file": bright}).json()["is_cat_or_dog"] is False
    monkeypatch.setenv("CATDOG_PET_THRESHOLD", "0.01")
    lenient = make_client(model_dir=tiny_pet_model_dir)
    assert lenient.post("/predict", files={"file": dark}).json()["is_cat_or_dog"] is True
    # The score itself does not depend on the threshold.
    assert lenient.post("/predict", files={"file": bright}).json()["pet_score"] == pytest.approx(
        tiny_pet_score(RED), abs=1e-4
    )


def test_pet_threshold_at_the_score_counts_as_a_pet(
    make_client: Callable[..., TestClient], tiny_pet_model_dir: Path
) -> None:
    score = pytest.approx(tiny_pet_score(RED), abs=1e-4)
    client = make_client(model_dir=tiny_pet_model_dir, pet_threshold=1.0)
    body = client.post("/predict", files={"file": ("x.png", red_png(), "image/png")}).json()
    assert body["pet_score"] == score
    assert body["is_cat_or_dog"] is False
    at_score = make_client(model_dir=tiny_pet_model_dir, pet_threshold=body["pet_score"])
    again = at_score.post("/predict", files={"file": ("x.png", red_png(), "image/png")}).json()
    assert again["is_cat_or_dog"] is True, "pet_score >= threshold is a pet"


def test_pet_threshold_setting_is_ignored_without_pet_score(make_client: Callable[..., TestClient]) -> None:
    client = make_client(pet_threshold=0.9)
    body = client.post("/predict", files={"file": ("x.png", red_png(), "image/png")}).json()
    assert body["label"] == "cat"
    assert body["pet_score"] is None
    assert body["is_cat_or_dog"] is None


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_invalid_pet_threshold_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CATDOG_PET_THRESHOLD", value)
    with pytest.raises(ValidationError, match="pet_threshold"):
        Settings()


@pytest.mark.parametrize(
    ("outputs", "ood", "configured", "expected"),
    [
        (["probabilities"], None, None, (None, "no pet_score output")),
        (["probabilities"], None, 0.7, (None, "no pet_score output")),
        (["probabilities", "pet_score"], {"threshold": 0.3}, None, (0.3, "metadata.ood.threshold")),
        (["probabilities", "pet_score"], {"threshold": 0.3}, 0.7, (0.7, "CATDOG_PET_THRESHOLD")),
        (["probabilities", "pet_score"], {"threshold": 0.3}, 0.0, (0.0, "CATDOG_PET_THRESHOLD")),
        (["probabilities", "pet_score"], None, None, (0.5, "default")),
    ],
)
def test_effective_pet_threshold(
    outputs: list[str],
    ood: dict[str, float] | None,
    configured: float | None,
    expected: tuple[float | None, str],
) -> None:
    metadata = ModelMetadata.model_validate(
        {"version": "v", "architecture": "a", "class_names": ["cat", "dog"], "image_size": 8}
        | {"outputs": outputs, "ood": ood}
    )
    assert effective_pet_threshold(metadata, configured) == expected
    # The loaded model carries the same resolution: one object, threshold included.
    model = ExportedModel(_NoRunner(), metadata, Path("m"), configured_pet_threshold=configured)
    assert (model.pet_threshold, model.pet_threshold_source) == expected


class _NoRunner:
    runtime, precision = "none", "fp32"

    def __call__(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        raise AssertionError("not run")


def test_batch_items_carry_pet_fields(pet_client: TestClient) -> None:
    files = [
        ("files", ("bright-cat.png", red_png(), "image/png")),
        ("files", ("dark.png", solid(DARK_RED), "image/png")),
        ("files", ("bright-dog.jpg", blue_jpeg(), "image/jpeg")),
    ]
    response = pet_client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    items = response.json()["predictions"]
    assert [p["label"] for p in items] == ["cat", "cat", "dog"]
    assert [p["is_cat_or_dog"] for p in items] == [True, False, True]
    assert items[1]["pet_score"] == pytest.approx(tiny_pet_score(DARK_RED), abs=1e-4)
    assert items[0]["pet_score"] > PET_MODEL_THRESHOLD > items[1]["pet_score"]


def test_pet_model_metadata_is_the_validated_document(
    pet_client: TestClient, tiny_pet_model_dir: Path
) -> None:
    metadata = pet_client.get("/metadata").json()
    serving = metadata.pop("serving")
    repository = metadata.pop("repository")
    on_disk = ModelMetadata.model_validate_json((tiny_pet_model_dir / "metadata.json").read_text())
    assert metadata == on_disk.model_dump(mode="json")
    assert metadata["outputs"] == ["probabilities", "pet_score"]
    assert metadata["ood"]["threshold"] == PET_MODEL_THRESHOLD
    # How it is served: the runtime answering and the threshold in force, as /readyz says too.
    assert serving == {
        "runtime": "tensorflow-fp32",
        "pet_threshold": PET_MODEL_THRESHOLD,
        "pet_threshold_source": "metadata.ood.threshold",
        "version": "1",
    }
    # One export (CATDOG_MODEL_DIR) is a repository of one version.
    assert repository["repository"] is False and repository["default_version"] == "1"
    assert [(v["version"], v["state"]) for v in repository["versions"]] == [("1", "AVAILABLE")]
    ready = pet_client.get("/readyz").json()
    assert ready["model_version"] == "tiny-pet-1"
    assert (ready["pet_threshold"], ready["pet_threshold_source"]) == (
        PET_MODEL_THRESHOLD,
        "metadata.ood.threshold",
    )


def test_openapi_documents_the_pet_fields(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("PredictionResponse", "BatchItem"):
        properties = schemas[name]["properties"]
        for field in ("pet_score", "is_cat_or_dog"):
            assert field in schemas[name]["required"], (name, field)
            assert "null" in [option.get("type") for option in properties[field]["anyOf"]], (name, field)
            assert properties[field]["description"]
            assert properties[field]["examples"]
        assert any(example["is_cat_or_dog"] is False for example in schemas[name]["examples"])
    assert "ModelMetadata" in schemas


def test_openapi_names_the_prediction_answers(client: TestClient) -> None:
    # The routes return the answer already encoded (routes.answer_json); the schema must still say what it is.
    paths = client.get("/openapi.json").json()["paths"]
    for path, schema in (("/predict", "PredictionResponse"), ("/predict/batch", "BatchPredictionResponse")):
        content = paths[path]["post"]["responses"]["200"]["content"]["application/json"]
        assert content["schema"] == {"$ref": f"#/components/schemas/{schema}"}, path


# --- bad input: 400 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "empty_image"),
        (b"this is not an image at all", "undecodable_image"),
        (truncated_jpeg(), "undecodable_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "undecodable_image"),
    ],
    ids=["empty", "text-bytes", "truncated-jpeg", "png-header-only"],
)
def test_predict_bad_image_bytes_are_400(client: TestClient, payload: bytes, code: str) -> None:
    multipart = client.post("/predict", files={"file": ("x.jpg", payload, "image/jpeg")})
    assert_error(multipart, 400, code)
    raw = client.post("/predict", content=payload, headers={"Content-Type": "image/jpeg"})
    assert_error(raw, 400, code)


def test_predict_unsupported_image_format_is_400(client: TestClient) -> None:
    # Pillow reads ICO and PPM, but the service only accepts photo formats.
    image = Image.new("RGB", (32, 32), RED)
    for fmt in ("ICO", "PPM"):
        response = client.post(
            "/predict", files={"file": ("x", encode(image, fmt), "application/octet-stream")}
        )
        assert_error(response, 400, "undecodable_image")


def test_predict_malformed_multipart_is_400(client: TestClient) -> None:
    response = client.post(
        "/predict",
        content=b'--abc\r\nContent-Disposition: form-data; name="file"\r\n\r\nno closing boundary',
        headers={"Content-Type": "multipart/form-data; boundary=abc"},
    )
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"]


def test_failed_decodes_withdraw_their_batching_announcement(client: TestClient) -> None:
    # A leaked announcement would make every later batch wait the full max_wait for nobody.
    client.post("/predict", files={"file": ("x.jpg", b"garbage", "image/jpeg")})
    files = [("files", ("a.png", red_png(), "image/png")), ("files", ("b.jpg", b"", "image/jpeg"))]
    client.post("/predict/batch", files=files)
    assert client.app.state.service.versions.default.batcher.announced == 0  # type: ignore[attr-defined]


def test_batch_with_one_bad_file_names_it(client: TestClient) -> None:
    files = [
        ("files", ("good.png", red_png(), "image/png")),
        ("files", ("bad.jpg", b"garbage", "image/jpeg")),
    ]
    body = assert_error(client.post("/predict/batch", files=files), 400, "undecodable_image")
    assert body["error"]["details"] == [
        {
            "index": 1,
            "filename": "bad.jpg",
            "code": "undecodable_image",
            "message": body["error"]["details"][0]["message"],
        }
    ]
    assert "bad.jpg" in body["error"]["details"][0]["message"]


# --- 413 -----------------------------------------------------------------------------------------


def test_upload_over_byte_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=2000)
    big = solid(RED, size=(400, 400), fmt="BMP")  # ~480 kB, well over the limit
    assert_error(
        client.post("/predict", files={"file": ("big.bmp", big, "image/bmp")}), 413, "payload_too_large"
    )
    raw = client.post("/predict", content=big, headers={"Content-Type": "image/bmp"})
    # Refused from Content-Length alone, before the body is read.
    assert assert_error(raw, 413, "payload_too_large")["error"]["message"].startswith("request body of")
    # A small image still works on the same app.
    assert client.post("/predict", files={"file": ("ok.png", red_png(), "image/png")}).status_code == 200


def test_file_just_over_limit_inside_small_body_is_413(make_client: Callable[..., TestClient]) -> None:
    # The body is under the body limit (limit + multipart slack), the file itself is not.
    client = make_client(max_upload_bytes=5000)
    data = red_png() + b"\x00" * 5000
    assert_error(
        client.post("/predict", files={"file": ("x.png", data, "image/png")}), 413, "payload_too_large"
    )


def test_chunked_body_over_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=1000)

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(200):
            yield b"\xff" * 1024

    response = client.post("/predict", content=chunks(), headers={"Content-Type": "image/jpeg"})
    body = assert_error(response, 413, "payload_too_large")
    # Cut off while streaming by the body limit, not after reading all 200 kB.
    assert body["error"]["message"].startswith("request body is over the limit")


def test_decompression_bomb_is_413_before_decoding(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_image_pixels=1_000_000)
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")  # 400 megapixels in a few dozen kB
    assert len(bomb) < 100_000
    body = assert_error(
        client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")}), 413, "image_too_large"
    )
    assert body["error"]["details"]["max_image_pixels"] == 1_000_000


@pytest.mark.parametrize("count", [3, 30])
def test_too_many_batch_files_is_413(make_client: Callable[..., TestClient], count: int) -> None:
    client = make_client(max_batch_files=2)
    files = [("files", (f"{i}.png", red_png(), "image/png")) for i in range(count)]
    assert_error(client.post("/predict/batch", files=files), 413, "too_many_files")


def test_second_file_on_single_predict_is_400_pointing_at_batch(client: TestClient) -> None:
    files = [("file", ("a.png", red_png(), "image/png")), ("file", ("b.png", red_png(), "image/png"))]
    body = assert_error(client.post("/predict", files=files), 400, "too_many_files")
    assert "/predict/batch" in body["error"]["message"]


# --- 415 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "application/pdf", "image/svg+xml"]
)
def test_wrong_part_type_is_415(client: TestClient, content_type: str) -> None:
    response = client.post("/predict", files={"file": ("x", red_png(), content_type)})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "application/x-www-form-urlencoded"]
)
def test_wrong_request_type_is_415(client: TestClient, content_type: str) -> None:
    response = client.post("/predict", content=b"{}", headers={"Content-Type": content_type})
    assert_error(response, 415, "unsupported_media_type")


def test_missing_content_type_is_415(client: TestClient) -> None:
    assert_error(client.post("/predict", content=red_png()), 415, "unsupported_media_type")


def test_batch_requires_multipart(client: TestClient) -> None:
    response = client.post("/predict/batch", content=red_png(), headers={"Content-Type": "image/png"})
    assert_error(response, 415, "unsupported_media_type")


# --- 422 -----------------------------------------------------------------------------------------


def test_missing_file_field_is_422(client: TestClient) -> None:
    response = client.post("/predict", files={"image": ("x.png", red_png(), "image/png")})
    body = assert_error(response, 422, "validation_error")
    assert "'file'" in body["error"]["message"]
    assert body["error"]["details"][0]["received_fields"] == ["image"]


def test_file_field_as_text_is_422(client: TestClient) -> None:
    response = client.post("/predict", data={"file": "cat.jpg"}, files={"other": ("x", b"x", "text/plain")})
    assert_error(response, 422, "validation_error")


def test_batch_missing_files_field_is_422(client: TestClient) -> None:
    response = client.post("/predict/batch", files={"file": ("x.png", red_png(), "image/png")})
    assert_error(response, 422, "validation_error")


# --- routing errors are JSON too -----------------------------------------------------------------


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


# --- operations ----------------------------------------------------------------------------------


def test_health_ready_metadata(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model_version"] == "tiny-test-1"
    assert ready.json()["runtime"] == "tensorflow-fp32"  # the tiny test model has no derived models
    metadata = client.get("/metadata").json()
    assert metadata["class_names"] == ["cat", "dog"]
    assert metadata["image_size"] == 32
    assert metadata["outputs"] == ["probabilities"]
    assert metadata["ood"] is None


def test_metadata_publishes_no_path_of_the_training_machine(
    make_client: Callable[..., TestClient], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """An export whose metadata.json still names the training machine's paths (written before they
    were cut, or by hand) publishes only their last component; paths inside the export stay."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    raw = json.loads((model_dir / "metadata.json").read_text())
    raw["training"] = {
        "config": {"output": "/tmp/run7", "data_dir": "../shared/data/cats_and_dogs_filtered"},
        "data": {"data_dir": "/home/alice/photos"},
        "members": [{"path": "C:\\Users\\bob\\w.pth"}, {"path": "~/w2.pth"}],
        "note": "see derived/model.onnx",
    }
    (model_dir / "metadata.json").write_text(json.dumps(raw))
    published = make_client(model_dir=model_dir).get("/metadata").json()
    assert published["training"] == {
        "config": {"output": "run7", "data_dir": "cats_and_dogs_filtered"},
        "data": {"data_dir": "photos"},
        "members": [{"path": "w.pth"}, {"path": "w2.pth"}],
        "note": "see derived/model.onnx",
    }
    text = json.dumps(published)
    for leak in ("/tmp", "/home", "Users", "~/", "../"):
        assert leak not in text


def test_readyz_is_503_after_shutdown(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    app = client.app
    client.__exit__(None, None, None)  # runs the lifespan shutdown
    with TestClient(app, raise_server_exceptions=False) as fresh:  # restarts: ready again
        assert fresh.get("/readyz").status_code == 200
    state = app.state.service  # type: ignore[attr-defined]
    assert not state.ready
    # Routes that need the model answer 503 with Retry-After rather than failing.
    probe = TestClient(app, raise_server_exceptions=False)  # not entered: lifespan not run
    response = probe.post("/predict", files={"file": ("x.png", red_png(), "image/png")})
    assert_error(response, 503, "not_ready")
    assert response.headers["retry-after"] == "1"
    not_ready = probe.get("/readyz")
    assert_error(not_ready, 503, "not_ready")
    # The same readiness check and the same 503 as the prediction routes.
    assert not_ready.headers["retry-after"] == "1"
    assert not_ready.json()["error"]["message"] == response.json()["error"]["message"]


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    mine = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\t"})
    assert generated.headers["x-request-id"] != "bad id with spaces\t"
    assert len(generated.headers["x-request-id"]) == 32


def test_metrics_count_requests_batches_and_latency(client: TestClient) -> None:
    client.post("/predict", files={"file": ("x.png", red_png(), "image/png")})
    client.post("/predict", files={"file": ("x.png", b"", "image/png")})
    text = client.get("/metrics").text
    assert 'catdog_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'catdog_http_requests_total{method="POST",route="/predict",status="400"} 1.0' in text
    assert "catdog_inference_duration_seconds_count 1.0" in text
    assert "catdog_queue_wait_seconds_count 1.0" in text
    assert "catdog_batch_size_count 1.0" in text
    assert 'catdog_http_request_duration_seconds_count{route="/predict"} 2.0' in text


def test_metrics_name_the_route_even_before_routing(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=1000)
    # Refused by the body-size limit from Content-Length alone, before the router runs.
    client.post("/predict", content=b"x" * 100_000, headers={"Content-Type": "image/png"})
    client.get("/nope")
    client.get("/predict")
    text = client.get("/metrics").text
    assert 'catdog_http_requests_total{method="POST",route="/predict",status="413"} 1.0' in text
    assert 'catdog_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'catdog_http_requests_total{method="GET",route="/predict",status="405"} 1.0' in text
    assert 'catdog_http_request_duration_seconds_count{route="unmatched"} 1.0' in text
    # The batcher's own metrics are there before any model call.
    for name in ("catdog_queue_depth", "catdog_queue_rejected_total", "catdog_batch_size_count"):
        assert f"{name} 0.0" in text, name


def test_log_lines_are_json_with_request_id_and_extra_fields() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("catdog.test-logs")
    handler = json_handler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    token = set_request_id(None)
    try:
        logger.info("outside a request")
        set_request_id("abc-123")
        try:
            raise ValueError("broken")
        except ValueError:
            logger.exception("hello %s", "there", extra={"batch_size": 3, "model_dir": Path("/models/x")})
    finally:
        reset_request_id(token)
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "request_id" not in outside
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", inside.pop("time"))
    assert "ValueError: broken" in inside.pop("exception")
    assert inside == {
        "level": "ERROR",
        "logger": "catdog.test-logs",
        "message": "hello there",
        "request_id": "abc-123",
        "batch_size": 3,
        "model_dir": "/models/x",
    }


def test_swagger_ui_and_openapi_document_file_upload(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    # Served from the app, not a CDN: the page works without internet access.
    assert "https://" not in docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static/swagger-ui/{asset}" in docs.text
        served = client.get(f"/static/swagger-ui/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 100_000
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "image/jpeg" in body
    assert "413" in spec["paths"]["/predict"]["post"]["responses"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/predict", "POST"),
        ("/healthz", "GET, HEAD"),
        # One route per method at this path: every one is named, not only the first route's.
        ("/v2/repository/index", "GET, HEAD, POST"),
        ("/v2/models/catdog/infer", "POST"),
    ],
)
def test_a_405_names_every_method_its_path_takes(client: TestClient, path: str, allowed: str) -> None:
    response = client.request("PATCH", path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
