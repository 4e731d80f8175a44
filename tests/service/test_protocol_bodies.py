"""Protocol bodies that cost far more to read than to send, against a live server in this process.

A compressed body of ~100 KB can inflate to 90 MB of millions of tiny BYTES elements or JSON objects;
JSON can nest thousands deep. Each is refused (413 over a limit, 400 malformed, as `{"error": "..."}`)
before it is split or parsed into millions of Python objects; the server's memory (this process's
RSS) is sampled while it answers. Legitimate compressed requests answer as uncompressed ones do.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import struct
import types
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from app.errors import TooLargeError
from app.main import create_app
from app.protocols import common
from app.settings import Settings
from benchmarks.soak import RssSampler
from tests.images import BLUE, RED, blue_jpeg, red_png
from tests.servers import uvicorn_in_thread
from tests.service.test_v2_protocol import bytes_input, labels, pixels_input

MiB = 1024 * 1024
V2_INFER = "/v2/models/catdog/infer"
TF_PREDICT = "/v1/models/catdog:predict"
HEADER_LENGTH = "Inference-Header-Content-Length"
# The server's own growth while answering one attack body. Splitting 14.9M elements or parsing 4M
# objects took ~900 MB; what is left is the inflated body itself, under the 89.5 MB body limit.
RSS_GROWTH_LIMIT = 300 * MiB


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    """The tiny model (red -> cat, blue -> dog) with the served limits: 32 images, 64 MiB batches."""
    with uvicorn_in_thread(create_app(Settings(model_dir=tiny_model_dir, auto_train=False))) as base_url:
        yield base_url


def compress(pieces: Iterable[bytes], encoding: str) -> bytes:
    """`pieces` compressed as they come, so the inflated body never exists on the client's side."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    return b"".join([compressor.compress(piece) for piece in pieces] + [compressor.flush()])


def repeat(unit: bytes, count: int, block: int = 100_000) -> Iterator[bytes]:
    full, rest = divmod(count, block)
    for _ in range(full):
        yield unit * block
    yield unit * rest


def post_sampling_rss(
    server: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, int]:
    """The response, and how far this process's RSS rose above where it was while it was answered."""
    with httpx.Client(base_url=server, timeout=300) as client:
        assert client.get("/v2/health/live").is_success
        sampler = RssSampler(os.getpid(), interval=0.005)
        sampler.start()
        try:
            response = client.post(path, content=body, headers=headers)
        finally:
            sampler.stop()
    return response, sampler.peak - sampler.before


def error_of(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert isinstance(error, str), "protocol errors are {'error': '<message>'}"
    return error


# --- compressed bodies of millions of tiny things --------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "status", "message"),
    [
        ([14_900_000], 413, "14900000 images sent, over the limit of 32"),
        ([1], 400, "has shape [1] but holds more than 1 elements"),
    ],
    ids=["declared", "undeclared"],
)
def test_v2_deflate_body_of_15m_tiny_bytes_elements_is_refused_before_they_are_split(
    server: str, shape: list[int], status: int, message: str
) -> None:
    elements = 14_900_000
    element = struct.pack("<I", 2) + b"ab"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": shape,
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": elements * len(element)},
                }
            ]
        }
    ).encode()
    body = compress([header, *repeat(element, elements)], "deflate")
    assert len(body) < 150_000  # 89 MB inflated

    response, growth = post_sampling_rss(
        server, V2_INFER, body, {"Content-Encoding": "deflate", HEADER_LENGTH: str(len(header))}
    )
    assert response.status_code == status, response.text
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / MiB:.0f} MB"
    assert error_of(response) == (f"input 'image' {message}" if status == 400 else message)


def test_tf_serving_gzip_body_of_4m_empty_b64_instances_is_413_before_parsing(server: str) -> None:
    items = 4_000_000
    body = compress([b'{"instances": [', *repeat(b'{"b64": ""},', items - 1), b'{"b64": ""}]}'], "gzip")
    assert len(body) < 100_000  # 48 MB inflated

    response, growth = post_sampling_rss(server, TF_PREDICT, body, {"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / MiB:.0f} MB"
    assert "4000001 objects" in error_of(response)


def test_millions_of_empty_arrays_are_413_before_parsing(server: str) -> None:
    # Under the comma limit, but more arrays than the largest pixel tensor (2/3 of the values) has.
    arrays = 2_700_000
    tf_body = b'{"instances": [' + b"[]," * (arrays - 1) + b"[]]}"
    tf = httpx.post(server + TF_PREDICT, content=tf_body, timeout=120)
    assert tf.status_code == 413 and "arrays" in error_of(tf)

    v2_body = json.dumps(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [[]]}]}
    ).encode()
    v2_body = v2_body.replace(b"[[]]", b"[" + b"[]," * (arrays - 1) + b"[]]")
    v2 = httpx.post(server + V2_INFER, content=v2_body, timeout=120)
    assert v2.status_code == 413 and "arrays" in error_of(v2)


class CountingInflaters:
    """Stands in for the zlib module in app.protocols.common: counts the bytes its inflaters return."""

    def __init__(self) -> None:
        self.inflated = 0

    def decompressobj(self, wbits: int) -> Any:
        inflater = zlib.decompressobj(wbits=wbits)
        counter = self

        class Counting:
            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                output = inflater.decompress(data, max_length)
                counter.inflated += len(output)
                return output

            def __getattr__(self, name: str) -> Any:
                return getattr(inflater, name)

        return Counting()


@pytest.mark.parametrize(("path", "encoding"), [(V2_INFER, "gzip"), (TF_PREDICT, "deflate")])
def test_a_compression_bomb_is_413_without_inflating_past_the_limit(
    server: str, monkeypatch: pytest.MonkeyPatch, path: str, encoding: str
) -> None:
    zeros = 100 * MiB
    body = compress(repeat(b"\0", zeros, block=MiB), encoding)
    assert len(body) < 200_000
    counting = CountingInflaters()
    monkeypatch.setattr(
        common, "zlib", types.SimpleNamespace(decompressobj=counting.decompressobj, error=zlib.error)
    )
    response = httpx.post(server + path, content=body, headers={"Content-Encoding": encoding}, timeout=120)
    assert response.status_code == 413, response.text
    limit = 64 * MiB * 4 // 3 + 64 * 1024  # body_limit with the served max_batch_request_bytes
    assert error_of(response) == f"the inflated request body is over the limit of {limit} bytes"
    assert 0 < counting.inflated <= limit + 1


# --- JSON nested deeper than any request needs ----------------------------------------------------


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("path", [V2_INFER, TF_PREDICT])
def test_deeply_nested_json_is_400_without_a_traceback(
    server: str, caplog: pytest.LogCaptureFixture, path: str, depth: int
) -> None:
    if path == V2_INFER:
        body = b'{"inputs": [{"name": "pixels", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": %s}]}'
    else:
        body = b'{"instances": %s}'
    with caplog.at_level(logging.WARNING):
        response = httpx.post(server + path, content=body % nested(depth), timeout=60)
    assert response.status_code == 400, response.text
    assert error_of(response) == "the JSON body nests deeper than 64 levels"
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


@pytest.mark.parametrize("path", [V2_INFER, TF_PREDICT])
def test_deeply_nested_objects_are_refused_too(server: str, path: str) -> None:
    body = b'{"a": ' * 1000 + b"1" + b"}" * 1000
    response = httpx.post(server + path, content=body, timeout=60)
    # More objects than a request needs: on V2 malformed whatever the image count (400); on TF
    # Serving, where objects grow with the instances, too much (413).
    assert response.status_code == (400 if path == V2_INFER else 413), response.text
    assert "1000 objects" in error_of(response)


def test_brackets_and_quotes_inside_strings_do_not_count_as_nesting(server: str) -> None:
    # The request id is echoed back; its brackets are text, not 100 levels of nesting.
    request_id = '["\\' * 100 + "]"
    with triton.InferenceServerClient(server.removeprefix("http://")) as client:
        result = client.infer("catdog", [bytes_input([red_png()], binary=False)], request_id=request_id)
    assert result.get_response()["id"] == request_id
    assert labels(result) == ["cat"]


# --- legitimate compressed requests ---------------------------------------------------------------


def _pixels(*colors: tuple[int, int, int]) -> np.ndarray:
    return np.stack([np.full((20, 30, 3), color, np.uint8) for color in colors])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("kind", ["bytes", "pixels"])
def test_v2_compressed_requests_answer_as_uncompressed_ones(server: str, kind: str, binary: bool) -> None:
    images = [red_png(), blue_jpeg()] * 16  # a full batch: 32 images
    expected_labels = ["cat", "dog"] * 16
    with triton.InferenceServerClient(server.removeprefix("http://")) as client:
        results = {}
        for algorithm in (None, "gzip", "deflate"):
            tensor = (
                bytes_input(images, binary) if kind == "bytes" else pixels_input(_pixels(RED, BLUE), binary)
            )
            results[algorithm] = client.infer("catdog", [tensor], request_compression_algorithm=algorithm)
    plain = results[None].as_numpy("probabilities")
    assert plain is not None
    assert labels(results[None]) == (expected_labels if kind == "bytes" else ["cat", "dog"])
    for algorithm in ("gzip", "deflate"):
        assert labels(results[algorithm]) == labels(results[None])
        np.testing.assert_array_equal(results[algorithm].as_numpy("probabilities"), plain)


@pytest.mark.parametrize(
    "request_body",
    [
        # 32 named instances: 65 objects, and over 64 brackets, so nesting is measured.
        {
            "instances": [
                {"image_bytes": {"b64": base64.b64encode(image).decode()}} for image in [red_png()] * 32
            ]
        },
        {"inputs": {"image_bytes": [{"b64": base64.b64encode(blue_jpeg()).decode()}]}},
        {"instances": _pixels(RED, BLUE).tolist()},
    ],
    ids=["named-32", "columnar", "pixels"],
)
def test_tf_serving_compressed_requests_answer_as_uncompressed_ones(
    server: str, request_body: dict[str, Any]
) -> None:
    raw = json.dumps(request_body).encode()
    plain = httpx.post(server + TF_PREDICT, content=raw, timeout=60)
    assert plain.status_code == 200, plain.text
    for encoding, body in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        response = httpx.post(
            server + TF_PREDICT, content=body, headers={"Content-Encoding": encoding}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json() == plain.json()


# --- the bounds admit the largest valid JSON tensors -----------------------------------------------


@pytest.mark.parametrize("width", [1, 1_333_333])
def test_structure_bounds_admit_the_largest_json_pixel_tensor(width: int) -> None:
    """One [H][W][3] image of MAX_JSON_VALUES / 3 pixels: a single row, or a single column (the most
    arrays per value a valid tensor has)."""
    pixels = common.MAX_JSON_VALUES // 3
    height = pixels // width
    row = b"[" + b"[200,200,200]," * (width - 1) + b"[200,200,200]]"
    image = b"[" + (row + b",") * (height - 1) + row + b"]"
    document = b'{"instances": [' + image + b"]}"
    assert document.count(b",") <= common.MAX_JSON_VALUES
    common.check_json_structure(document, max_objects=80, max_images=32)
    with pytest.raises(TooLargeError) as caught:
        common.check_json_structure(document + b"[]" * common.json_arrays_limit(32), 80, 32)
    assert caught.value.status_code == 413
