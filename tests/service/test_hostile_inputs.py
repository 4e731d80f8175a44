"""Hostile and heavy images through the API: the decode budget in bytes, JPEG draft mode before the
pixel limit, bombs refused before decoding (pixel bombs, and CPU bombs in a file's structure), and
the contract details (HEAD, multipart framing)."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.decoding import DecodeBudget
from catdog import image_structure as bounds
from catdog import imaging
from catdog.imaging import ImageTooComplexError, ImageTooLargeError, load_model_input
from tests.images import (
    BLUE,
    bmp_rle,
    encode,
    exif_segments_jpeg,
    gif_with_blocks,
    jpeg_segment,
    jpeg_with,
    png_chunk,
    png_with_chunks,
    progressive_jpeg_with_scans,
    red_png,
    tiff_with_strips,
)
from tests.service.test_api import assert_error

MiB = 1024 * 1024


def big_jpeg(size: tuple[int, int], mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, size, BLUE if mode == "RGB" else 90), "JPEG", quality=70)


def post_image(client: TestClient, data: bytes, content_type: str = "image/png"):  # type: ignore[no-untyped-def]
    return client.post("/predict", content=data, headers={"Content-Type": content_type})


def test_phone_sized_jpegs_answer_200(client: TestClient) -> None:
    """48 MP (8000x6000) and 108 MP (12000x9000) are over the 40 MP default, but JPEG decodes them at
    1/8 scale: the limit applies to the pixels actually decoded."""
    for size, mode in (((8000, 6000), "RGB"), ((12000, 9000), "L")):
        response = post_image(client, big_jpeg(size, mode), "image/jpeg")
        assert response.status_code == 200, (size, response.text)


def test_pixel_limit_applies_after_draft_scaling_but_not_to_png(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_image_pixels=1_000_000)
    jpeg = big_jpeg((2400, 1800))  # 4.3 MP; the tiny model's 32 px input lets it decode at 300x225
    assert post_image(client, jpeg, "image/jpeg").status_code == 200
    png = encode(Image.new("1", (2400, 1800)), "PNG")  # no reduced decode: refused from its header
    body = assert_error(post_image(client, png), 413, "image_too_large")
    assert body["error"]["details"] == {"max_image_pixels": 1_000_000}
    assert "2400x1800" in body["error"]["message"]


def test_decode_budget_counts_bytes_per_pixel_not_pixels(make_client: Callable[..., TestClient]) -> None:
    client = make_client(decode_memory_bytes=8 * MiB)
    sixteen_bit = encode(Image.new("I;16", (1400, 1400), 30000), "PNG")  # 2 bytes/pixel: 3.9 MB
    rgba = encode(Image.new("RGBA", (1400, 1400), (*BLUE, 128)), "PNG")  # same pixels, ~15 bytes each
    assert post_image(client, sixteen_bit).status_code == 200
    body = assert_error(post_image(client, rgba), 413, "image_too_large")
    assert body["error"]["details"] == {"decode_memory_bytes": 8 * MiB}
    assert "decode memory budget" in body["error"]["message"]


def test_16_bit_and_float_images_keep_their_range(client: TestClient) -> None:
    """Resized in their own mode, then mapped to 8 bits: a 16-bit white stays white, a 0..1 float too."""
    white16 = encode(Image.new("I;16", (3000, 2000), 65535), "PNG")
    floats = Image.fromarray(np.full((300, 200), 1.0, dtype=np.float32), "F")
    for data in (white16, encode(floats, "TIFF")):
        response = post_image(client, data, "application/octet-stream")
        assert response.status_code == 200, response.text


def test_batch_files_are_decoded_within_the_budget(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(decode_memory_bytes=8 * MiB)
    budget: DecodeBudget = client.app.state.service.decoder.budget  # type: ignore[attr-defined]
    peak = 0
    add = budget._add  # every change of budget.used goes through it

    def recording_add(nbytes: int) -> None:
        nonlocal peak
        add(nbytes)
        peak = max(peak, budget.used)

    monkeypatch.setattr(budget, "_add", recording_add)
    image = encode(Image.new("I;16", (1400, 1400), 30000), "PNG")  # 3.9 MB each: two fit at once
    files = [("files", (f"{i}.png", image, "image/png")) for i in range(5)]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 5
    assert 0 < peak <= 8 * MiB
    assert budget.used == 0


def test_decode_budget_waits_first_come_first_served() -> None:
    async def scenario() -> list[str]:
        budget = DecodeBudget(10)
        order: list[str] = []
        release = asyncio.Event()

        async def decode(name: str, nbytes: int, hold: bool = False) -> None:
            async with budget.hold(nbytes):
                order.append(name)
                assert budget.used <= budget.capacity
                if hold:
                    await release.wait()

        first = asyncio.create_task(decode("first", 6, hold=True))
        await asyncio.sleep(0)
        big = asyncio.create_task(decode("big", 8))  # waits: 6 + 8 > 10
        await asyncio.sleep(0)
        small = asyncio.create_task(decode("small", 2))  # would fit, but does not overtake "big"
        cancelled = asyncio.create_task(decode("cancelled", 1))
        await asyncio.sleep(0.01)
        assert order == ["first"]
        cancelled.cancel()
        release.set()
        await asyncio.gather(first, big, small, return_exceptions=True)
        assert budget.used == 0
        return order

    assert asyncio.run(scenario()) == ["first", "big", "small"]


def test_head_on_health_and_readiness(client: TestClient) -> None:
    for path in ("/healthz", "/readyz"):
        response = client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""


def test_multipart_without_closing_boundary_is_400(client: TestClient) -> None:
    part = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + red_png() + b"\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    for body in (part, part[: len(part) // 2]):
        assert_error(client.post("/predict", content=body, headers=headers), 400, "malformed_multipart")
    closed = client.post("/predict", content=part + b"--b0undary--\r\n", headers=headers)
    assert closed.status_code == 200, closed.text
    # The field really missing (body complete) stays a 422.
    other = part.replace(b'name="file"', b'name="photo"') + b"--b0undary--\r\n"
    assert_error(client.post("/predict", content=other, headers=headers), 422, "validation_error")


def test_batch_schema_requires_at_least_one_file(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["files"]["minItems"] == 1


def test_jpeg_bomb_is_refused_even_at_one_eighth_scale(client: TestClient) -> None:
    # 65000x65000 declared: 1/8 scale is still 8125x8125 = 66 MP. Only the header is built here.
    header = io.BytesIO()
    Image.new("L", (16, 16)).save(header, "JPEG")
    data = bytearray(header.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (65000).to_bytes(2, "big") * 2
    assert_error(post_image(client, bytes(data), "image/jpeg"), 413, "image_too_large")


def test_decode_budget_try_take_never_waits_and_never_overtakes() -> None:
    async def scenario() -> None:
        budget = DecodeBudget(10)
        assert await asyncio.to_thread(budget.try_take, 6)  # a worker thread, room: taken
        assert not await asyncio.to_thread(budget.try_take, 5)  # over the budget: refused at once
        release = asyncio.Event()

        async def waiter() -> None:
            async with budget.hold(5):
                await release.wait()

        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        # 2 bytes would fit, but someone is queued first: the thread must take the waiting path.
        assert not await asyncio.to_thread(budget.try_take, 2)
        # Given back from a thread while someone waits: the event loop hands the bytes on.
        await asyncio.to_thread(budget.release_from_thread, 6, asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        assert budget.used == 5
        release.set()
        await waiting
        assert budget.used == 0
        # Nobody waiting: given back in the thread itself.
        assert await asyncio.to_thread(budget.try_take, 4)
        await asyncio.to_thread(budget.release_from_thread, 4, asyncio.get_running_loop())
        assert budget.used == 0

    asyncio.run(scenario())


# --- CPU bombs in the file's structure: refused before Pillow parses them ------------------------------


def test_exif_segment_bomb_is_refused_before_pillow_opens_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 MB of 18-byte Exif APP1 segments: Pillow joins them with `bytes +=` while opening the file
    (4 MiB of them: 5.3 s of CPU, 10 MB: minutes; benchmarks/hostile.py). The segment walk refuses it
    at the fifth, before Pillow sees a byte."""
    bomb = exif_segments_jpeg(10 * MiB - 4096)  # just under the upload limit
    with monkeypatch.context() as patched:
        patched.setattr(imaging.Image, "open", _must_not_be_called)
        with pytest.raises(ImageTooComplexError, match="more than 4 Exif segments"):
            load_model_input(bomb, 336, 40_000_000)
    body = assert_error(post_image(client, bomb, "image/jpeg"), 400, "undecodable_image")
    assert "more than 4 Exif segments" in body["error"]["message"]


def _exif_with_entries(entries: int) -> bytes:
    """A big-endian Exif block whose IFD0 has `entries` entries, the first the orientation."""
    rows = [struct.pack(">HHIHH", 0x0112, 3, 1, 1, 0)]
    rows += [struct.pack(">HHIHH", 0xF000 + index, 3, 1, 1, 0) for index in range(entries - 1)]
    return b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", entries) + b"".join(rows) + b"\x00" * 4


def _over_the_bounds() -> dict[str, bytes]:
    """Name -> a small file just over one structure bound."""
    exif = jpeg_segment(0xE1, b"Exif\x00\x00" + _exif_with_entries(2))
    png_exif = png_chunk(b"eXIf", _exif_with_entries(bounds.IFD_MAX_ENTRIES + 1))
    return {
        "jpeg segments": jpeg_with(jpeg_segment(0xE5, b"") * bounds.JPEG_MAX_SEGMENTS),
        "jpeg exif segments": jpeg_with(exif * (bounds.JPEG_MAX_EXIF_SEGMENTS + 1)),
        "jpeg exif entries": jpeg_with(
            jpeg_segment(0xE1, b"Exif\x00\x00" + _exif_with_entries(bounds.IFD_MAX_ENTRIES + 1))
        ),
        "jpeg metadata bytes": jpeg_with(
            jpeg_segment(0xE2, b"\x00" * 65_000) * (bounds.JPEG_MAX_METADATA_BYTES // 65_000 + 1)
        ),
        "jpeg fill bytes": jpeg_with(
            jpeg_segment(0xFE, b"x") + b"\xff" * (bounds.JPEG_MAX_SKIPPED_BYTES + 1)
        ),
        "jpeg stray bytes": jpeg_with(
            jpeg_segment(0xFE, b"x") + b"\x00" * (bounds.JPEG_MAX_SKIPPED_BYTES + 1)
        ),
        "jpeg scans": progressive_jpeg_with_scans(bounds.JPEG_MAX_SCANS + 1),
        "png chunks": png_with_chunks(png_chunk(b"prVt", b"") * bounds.PNG_MAX_CHUNKS, after_pixels=True),
        "png compressed chunks": png_with_chunks(
            png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"v")) * (bounds.PNG_MAX_COMPRESSED_CHUNKS + 1)
        ),
        "png exif entries": png_with_chunks(png_exif),
        "gif blocks": gif_with_blocks(b"!\x01" + b"\x01a" * bounds.GIF_MAX_BLOCKS + b"\x00"),
        "gif stray bytes": gif_with_blocks(b"\x00" * (bounds.GIF_MAX_BLOCKS + 1)),
        "tiff strips": tiff_with_strips(bounds.TIFF_MAX_STRIPS + 1),
        "bmp rle pixels": bmp_rle(bounds.BMP_RLE_MAX_PIXELS + 1, 1, body=b"\x00\x01"),
        "bmp rle bytes": bmp_rle(1000, 1000, body=b"\x00\x00" * (bounds.BMP_RLE_MAX_BYTES // 2 + 1)),
    }


@pytest.mark.parametrize("name", sorted(_over_the_bounds()))
def test_files_over_a_structure_bound_are_refused_before_pillow_parses_them(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _over_the_bounds()[name]
    if name != "jpeg scans":  # Pillow reads no scan when it opens a JPEG: counted after the pixel limit
        monkeypatch.setattr(imaging.Image, "open", _must_not_be_called)
    with pytest.raises(ImageTooComplexError, match=r"more than|over the limit") as info:
        load_model_input(data, 32, 40_000_000)
    assert str(info.value.limit) in str(info.value)


def _must_not_be_called(*args: object, **kwargs: object) -> None:
    raise AssertionError("Pillow parsed a file over a structure bound")


def test_files_at_the_structure_bounds_are_decoded() -> None:
    at_the_bounds = [
        jpeg_with(jpeg_segment(0xE5, b"") * (bounds.JPEG_MAX_SEGMENTS - 20)),
        jpeg_with(jpeg_segment(0xE1, b"Exif\x00\x00" + _exif_with_entries(bounds.IFD_MAX_ENTRIES))),
        jpeg_with(jpeg_segment(0xFE, b"x") + b"\xff" * 1000 + b"\x00" * 1000),
        progressive_jpeg_with_scans(bounds.JPEG_MAX_SCANS),
        png_with_chunks(
            png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"v")) * bounds.PNG_MAX_COMPRESSED_CHUNKS
        ),
        gif_with_blocks(b"!\xfe" + b"\x01a" * 1000 + b"\x00" + b"\x00" * 1000),
        tiff_with_strips(1000),
        bmp_rle(1000, 1000, bits=4),
    ]
    for data in at_the_bounds:
        assert load_model_input(data, 32, 40_000_000).shape == (32, 32, 3)


def test_scans_are_bounded_by_their_product_with_the_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refinement scan walks every coefficient of the image: 36 MP, ~21 ms a scan."""
    data = progressive_jpeg_with_scans(12, size=(200, 100))
    monkeypatch.setattr(bounds, "JPEG_MAX_SCAN_PIXELS", 200 * 100 * 11)
    with pytest.raises(ImageTooComplexError, match="12 scans, over the limit of 11"):
        load_model_input(data, 32, 40_000_000)
    monkeypatch.setattr(bounds, "JPEG_MAX_SCAN_PIXELS", 200 * 100 * 12)
    assert load_model_input(data, 32, 40_000_000).shape == (32, 32, 3)


def test_webp_canvas_is_checked_before_libwebp_allocates_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow creates libwebp's decoder, which allocates two RGBA canvases, as it opens the file."""
    data = bytearray(encode(Image.new("RGBA", (16, 16), (*BLUE, 128)), "WEBP", quality=50))
    assert data[12:16] == b"VP8X"
    data[24:30] = (16383 - 1).to_bytes(3, "little") * 2  # a 16383x16383 canvas: 2 x 1 GiB
    monkeypatch.setattr(imaging.Image, "open", _must_not_be_called)
    with pytest.raises(ImageTooLargeError, match="16383x16383"):
        load_model_input(bytes(data), 32, 40_000_000)


def test_structure_bombs_are_400s_naming_the_bound(client: TestClient) -> None:
    bombs = [exif_segments_jpeg(4 * MiB), progressive_jpeg_with_scans(5000), tiff_with_strips(200_000)]
    for data, bound in zip(bombs, ("Exif segments", "scans", "strips or tiles"), strict=True):
        body = assert_error(post_image(client, data, "application/octet-stream"), 400, "undecodable_image")
        assert bound in body["error"]["message"]
