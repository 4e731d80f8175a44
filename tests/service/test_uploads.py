"""Multipart parsing (app/uploads.py): python-multipart fed chunk by chunk, with Starlette's form rules."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.uploads import _FormParts
from tests.images import red_png

BOUNDARY = "x-catdog-boundary"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def part(disposition: str, data: bytes, content_type: str | None = None) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 1 << 20])
def test_parts_are_the_same_however_the_body_arrives(chunk_size: int) -> None:
    # A header, a filename or the boundary itself split across reads must not change the parts.
    image = red_png() + b"\r\n--x-catdog-boundar" + red_png()  # data that nearly holds the boundary
    body = form(
        part('form-data; name="note"', b"a text field"),
        part('form-data; name="files"; filename="café.png"', image, "image/png"),  # UTF-8 on the wire
    )
    parts = _FormParts(BOUNDARY.encode(), max_files=4)
    for start in range(0, len(body), chunk_size):
        parts.write(body[start : start + chunk_size])
    assert parts.complete
    assert [(p.name, p.filename, p.content_type, p.data) for p in parts.parts] == [
        ("note", None, "", b"a text field"),
        ("files", "café.png", "image/png", image),
    ]


def test_a_part_without_a_name_is_400(client: TestClient) -> None:
    body = form(part('form-data; filename="a.png"', red_png(), "image/png"))
    response = client.post("/predict", content=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_multipart"
    assert "name" in response.json()["error"]["message"]


def test_too_many_text_fields_is_400(client: TestClient) -> None:
    fields = [part(f'form-data; name="f{i}"', b"x") for i in range(65)]
    body = form(*fields, part('form-data; name="file"; filename="a.png"', red_png(), "image/png"))
    response = client.post("/predict", content=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_multipart"
    # 64 are still fine.
    body = form(*fields[:64], part('form-data; name="file"; filename="a.png"', red_png(), "image/png"))
    assert client.post("/predict", content=body, headers=HEADERS).status_code == 200


def test_a_text_field_over_1_mib_is_400(client: TestClient) -> None:
    body = form(
        part('form-data; name="note"', b"x" * (1024 * 1024 + 1)),
        part('form-data; name="file"; filename="a.png"', red_png(), "image/png"),
    )
    response = client.post("/predict", content=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_multipart"


def test_garbage_instead_of_parts_is_400(client: TestClient) -> None:
    response = client.post("/predict", content=b"--x-catdog-boundary\r\nno headers here", headers=HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_multipart"
