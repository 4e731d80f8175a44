"""KServe's Open Inference Protocol (V2) against a live server, driven by Triton's own Python client.

`tritonclient[http]` was written by the Triton team, not here: if it can talk to us (JSON and the
binary-data extension, BYTES and UINT8 inputs, binary and JSON outputs), real V2 clients can.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from app.main import create_app
from app.settings import Settings
from tests.conftest import real_photos
from tests.images import BLUE, RED, blue_jpeg, red_png, truncated_jpeg
from tests.servers import uvicorn_in_thread

MODEL = "catdog"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    """The tiny model (red -> cat, blue -> dog) on a real uvicorn; batches wait up to 100 ms."""
    settings = Settings(
        model_dir=tiny_model_dir, auto_train=False, max_batch_files=4, max_batch_size=16, max_wait_ms=100
    )
    with uvicorn_in_thread(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.removeprefix("http://"), concurrency=16) as tc:
        yield tc


def bytes_input(images: list[bytes], binary: bool) -> triton.InferInput:
    """Encoded images as a BYTES input: raw in binary data, base64 strings in JSON."""
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:
        encoded = [base64.b64encode(image).decode() for image in images]
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    return tensor


def pixels_input(pixels: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def outputs(binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "label")]


def labels(result: triton.InferResult) -> list[str]:
    values = result.as_numpy("label")
    assert values is not None
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values.reshape(-1)]


# --- health and metadata -------------------------------------------------------------------------


def test_health_server_and_model_metadata(client: triton.InferenceServerClient, tiny_model_dir: Path) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    # Versions are numbered, as on the TF Serving routes; the model's own version is in `parameters`.
    model_version = json.loads((tiny_model_dir / "metadata.json").read_text())["version"]
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("resnet50")
    assert not client.is_model_ready(MODEL, model_version="999")
    assert not client.is_model_ready(MODEL, model_version=model_version)

    server = client.get_server_metadata()
    assert server["name"] == MODEL
    assert "binary_tensor_data" in server["extensions"]

    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL
    assert metadata["versions"] == ["1"]
    assert metadata["parameters"] == {"catdog_model_version": model_version}
    assert {(t["name"], t["datatype"]) for t in metadata["inputs"]} == {
        ("image", "BYTES"),
        ("pixels", "UINT8"),
    }
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("probabilities", "FP32", [-1, 2]),
        ("label", "BYTES", [-1]),
    ]
    assert client.get_model_metadata(MODEL, model_version="1") == metadata
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("resnet50")
    assert caught.value.status() == "404"
    assert "not found" in caught.value.message()


# --- inference -----------------------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_bytes_input_classifies_encoded_images(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    result = client.infer(
        MODEL, [bytes_input([red_png(), blue_jpeg()], binary_in)], outputs=outputs(binary_out), request_id="7"
    )
    assert labels(result) == ["cat", "dog"]
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    assert probabilities.shape == (2, 2)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert probabilities[0, 0] > 0.9 and probabilities[1, 1] > 0.9
    response = result.get_response()
    assert response["model_name"] == MODEL and response["id"] == "7"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_uint8_input_classifies_pixels_of_any_size(
    client: triton.InferenceServerClient, binary: bool
) -> None:
    # 50x70, not the tiny model's 32x32: the server squashes them like decoded uploads.
    pixels = np.stack([np.full((50, 70, 3), RED, np.uint8), np.full((50, 70, 3), BLUE, np.uint8)])
    result = client.infer(MODEL, [pixels_input(pixels, binary)], outputs=outputs(binary))
    assert labels(result) == ["cat", "dog"]


def test_pixels_and_the_same_image_encoded_get_the_same_answer(client: triton.InferenceServerClient) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    from PIL import Image

    from tests.images import encode

    png = encode(Image.fromarray(pixels[0]))
    by_pixels = client.infer(MODEL, [pixels_input(pixels, True)]).as_numpy("probabilities")
    by_bytes = client.infer(MODEL, [bytes_input([png], True)]).as_numpy("probabilities")
    assert by_pixels is not None and by_bytes is not None
    np.testing.assert_allclose(by_pixels, by_bytes, atol=1e-6)


def test_default_outputs_are_binary_and_versioned_path_works(client: triton.InferenceServerClient) -> None:
    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    result = client.infer(MODEL, [bytes_input([blue_jpeg()], True)], model_version="1")
    assert labels(result) == ["dog"]
    assert result.get_response()["model_version"] == "1"
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities", "label"]
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [bytes_input([blue_jpeg()], True)], model_version="2")
    assert caught.value.status() == "404"


def test_compressed_requests_are_inflated(client: triton.InferenceServerClient) -> None:
    for algorithm in ("gzip", "deflate"):
        result = client.infer(
            MODEL, [bytes_input([red_png()], True)], request_compression_algorithm=algorithm
        )
        assert labels(result) == ["cat"]


def test_real_photos_through_the_default_model(default_server: str) -> None:
    photos = real_photos(per_class=2)
    with triton.InferenceServerClient(default_server.removeprefix("http://")) as client:
        result = client.infer(MODEL, [bytes_input([path.read_bytes() for path, _ in photos], True)])
        metadata = client.get_model_metadata(MODEL)
    assert labels(result) == [label for _, label in photos]
    names = [o["name"] for o in metadata["outputs"]]
    assert names == ["probabilities", "label", "pet_score", "is_cat_or_dog"]
    pet = result.as_numpy("is_cat_or_dog")
    assert pet is not None and pet.dtype == np.bool_ and pet.all()


def test_concurrent_requests_share_the_dynamic_batcher(server: str) -> None:
    def model_calls_and_images() -> tuple[float, float]:
        text = httpx.get(f"{server}/metrics").text
        found = [
            re.search(rf"^catdog_batch_size_{name} (\S+)$", text, re.MULTILINE) for name in ("count", "sum")
        ]
        assert found[0] and found[1], "no batch size histogram in /metrics"
        return float(found[0].group(1)), float(found[1].group(1))

    async def fire(requests: int) -> list[list[str]]:
        # tritonclient's asyncio client (aiohttp): the requests really are in flight together.
        async with triton_aio.InferenceServerClient(server.removeprefix("http://")) as client:
            results = await asyncio.gather(
                *(client.infer(MODEL, [bytes_input([red_png()], True)]) for _ in range(requests))
            )
        return [labels(result) for result in results]

    calls_before, images_before = model_calls_and_images()
    requests = 32
    assert asyncio.run(fire(requests)) == [["cat"]] * requests
    calls, images = model_calls_and_images()
    assert images - images_before == requests
    # One model call per request would mean no batching.
    assert calls - calls_before <= requests / 2, f"{calls - calls_before} model calls for {requests} requests"


# --- errors: the protocol's {"error": "..."}, with /predict's status codes ----------------------


def raw_infer(server: str, body: bytes | dict[str, object], **headers: str) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return httpx.post(f"{server}/v2/models/{MODEL}/infer", content=content, headers=headers)


def image_request(*data: str, datatype: str = "BYTES", name: str = "image") -> dict[str, object]:
    return {"inputs": [{"name": name, "shape": [len(data)], "datatype": datatype, "data": list(data)}]}


RED_B64 = base64.b64encode(red_png()).decode()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "invalid inference request"),
        (b"[]", 400, "invalid inference request"),
        ({"inputs": []}, 400, "inputs"),
        (image_request("%%% not base64"), 400, "not valid base64"),
        (image_request(base64.b64encode(b"hello").decode()), 400, "not a decodable image"),
        (image_request(base64.b64encode(truncated_jpeg()).decode()), 400, "truncated"),
        (image_request(""), 400, "empty"),
        (image_request(RED_B64, datatype="FP32"), 400, "must be BYTES"),
        (image_request(RED_B64, name="input_1"), 400, "unknown input 'input_1'"),
        (image_request(*[RED_B64] * 5), 413, "over the limit of 4"),
        (
            {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [RED_B64]}]},
            400,
            "shape [2]",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 2, 2], "datatype": "UINT8", "data": [0] * 4}]},
            400,
            "[N, H, W, 3]",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [0, 1, 256]}]},
            400,
            "0..255",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [0.5, 1, 2]}]},
            400,
            "integers",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 1, 2, 3], "datatype": "UINT8", "data": [1, 2, 3]}]},
            400,
            "holds 3",
        ),
        ({**image_request(RED_B64), "outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
        # Found by schemathesis: a null tensor was a 500.
        (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": None}]},
            400,
            "neither 'data'",
        ),
        (
            {**image_request(RED_B64), "parameters": {"binary_data_output": 0}},
            400,
            "invalid inference request",
        ),
    ],
)
def test_bad_requests_get_protocol_errors(
    server: str, body: bytes | dict[str, object], status: int, message: str
) -> None:
    response = raw_infer(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str), "V2 errors are {'error': '<message>'}"
    assert message in error


def test_binary_extension_errors(server: str) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 100}}
            ]
        }
    ).encode()
    element = red_png()
    tensor = struct.pack("<I", len(element)) + element
    wrong_size = raw_infer(server, header + tensor, **{"Inference-Header-Content-Length": str(len(header))})
    assert wrong_size.status_code == 400 and "binary_data_size 100" in wrong_size.json()["error"]
    bad_length = raw_infer(server, header, **{"Inference-Header-Content-Length": "99999"})
    assert bad_length.status_code == 400 and "Inference-Header-Content-Length" in bad_length.json()["error"]
    truncated = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 10}}
            ]
        }
    ).encode()
    cut = raw_infer(
        server,
        truncated + struct.pack("<I", 500) + b"abcdef",
        **{"Inference-Header-Content-Length": str(len(truncated))},
    )
    assert cut.status_code == 400 and "truncated" in cut.json()["error"]


def test_unknown_model_and_bad_encoding(server: str) -> None:
    missing = httpx.post(f"{server}/v2/models/resnet/infer", json=image_request(RED_B64))
    assert missing.status_code == 404
    assert missing.json() == {"error": "model not found: 'resnet' (this server serves 'catdog')"}
    brotli = raw_infer(
        server, gzip.compress(json.dumps(image_request(RED_B64)).encode()), **{"Content-Encoding": "br"}
    )
    assert brotli.status_code == 415 and "Content-Encoding" in brotli.json()["error"]
    corrupt = raw_infer(server, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert corrupt.status_code == 400 and "gzip" in corrupt.json()["error"]


def test_not_ready_is_503_with_retry_after(tiny_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    # Without entering the client, the lifespan never runs: no model is loaded.
    app = create_app(Settings(model_dir=tiny_model_dir, auto_train=False, retry_after_seconds=4))
    client = TestClient(app)
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False}
    assert ready.headers["retry-after"] == "4"
    infer = client.post(f"/v2/models/{MODEL}/infer", json=image_request(RED_B64))
    assert infer.status_code == 503 and isinstance(infer.json()["error"], str)
    assert infer.headers["retry-after"] == "4"
    assert client.get("/v2/health/live").json() == {"live": True}


def test_huge_json_tensors_are_refused_before_parsing(server: str) -> None:
    values = 4_000_001  # one over MAX_JSON_VALUES: 8 MB of "0," that would parse into ~100 MB of objects
    data = b"[" + b"0," * values + b"0]"
    head = b'{"inputs": [{"name": "pixels", "shape": [1, 1, %d, 3], "datatype": "UINT8", "data": ' % (
        values + 1
    )
    response = raw_infer(server, head + data + b"}]}")
    assert response.status_code == 413
    assert "send pixel tensors as binary data" in response.json()["error"]
    tf = httpx.post(f"{server}/v1/models/{MODEL}:predict", content=b'{"instances": ' + data + b"}")
    assert tf.status_code == 413 and "binary data" in tf.json()["error"]
