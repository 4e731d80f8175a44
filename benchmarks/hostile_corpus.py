# ruff: noqa: E501 (the case table reads best one case per line)
"""The hostile-input corpus: each case is an attack a small client can make, as a function that runs it
against a live server and returns what came back (status codes, or what the connection did).

Two rounds of attacks are here: decompression and pixel bombs, broken files and multipart floods (the
first), and CPU bombs in image metadata, compressed protocol bodies, nested JSON, header floods, idle
and slow connections and malformed HTTP (the second). `benchmarks/hostile.py` runs them against a
server process and measures what each one costs it; the tests assert the answers case by case.

Every image is generated here, small on the wire: the point of these inputs is what they expand into.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from PIL import Image

MEGAPIXELS_40 = (6324, 6324)  # just under the default 40 MP limit


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    run: Callable[[str], list[str]]  # base URL -> what came back, one entry per request or connection
    images: int = 1  # images a batch case sends: the CPU goal is per image


# --- images ------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@functools.cache
def small_jpeg() -> bytes:
    return encode(Image.new("RGB", (64, 64), (200, 120, 40)), "JPEG", quality=80)


def exif_segments_jpeg(total_bytes: int, payload: int = 8) -> bytes:
    """A small JPEG preceded by as many tiny Exif APP1 segments as fit in `total_bytes`: Pillow joins
    the segments' payloads one concatenation at a time, which is quadratic in their number."""
    segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + payload) + b"Exif\x00\x00" + b"\x00" * payload
    body = small_jpeg()
    count = max(1, (total_bytes - len(body)) // len(segment))
    return body[:2] + segment * count + body[2:]


@functools.cache
def png16(size: int = 6320) -> bytes:
    """16-bit grayscale, ~90 KB on the wire, size*size*2 bytes decoded."""
    image = Image.new("I;16", (size, size), 0)
    image.paste(40000, (0, 0, size // 2, size))
    return encode(image, "PNG")


@functools.cache
def rgba_png() -> bytes:
    return encode(Image.new("RGBA", MEGAPIXELS_40, (10, 200, 30, 128)), "PNG")


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring width x height, with one empty data chunk: a pixel bomb by its header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@functools.cache
def webp_lossless() -> bytes:
    return encode(Image.new("RGB", MEGAPIXELS_40, (30, 90, 200)), "WEBP", lossless=True)


@functools.cache
def gif_40mp() -> bytes:
    return encode(Image.new("P", MEGAPIXELS_40, 3), "GIF")


@functools.cache
def tiff_deflate() -> bytes:
    return encode(Image.new("RGB", MEGAPIXELS_40, (5, 5, 5)), "TIFF", compression="tiff_deflate")


def bmp_rle8(width: int = MEGAPIXELS_40[0], height: int = MEGAPIXELS_40[1]) -> bytes:
    """A BMP in RLE8 whose pixel data is only 'end of bitmap': a few bytes for width x height pixels."""
    palette = b"".join(bytes((i, 0, 255 - i, 0)) for i in range(256))  # not grey: Pillow keeps mode P
    data = b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


def truncated_jpeg() -> bytes:
    data = encode(Image.new("RGB", (640, 480), (90, 20, 20)), "JPEG")
    return data[: len(data) // 3]


# --- protocol bodies ---------------------------------------------------------------------------------


def v2_bytes_elements(elements: int) -> tuple[bytes, dict[str, str]]:
    """A KServe V2 request whose binary BYTES input holds `elements` empty strings, deflated."""
    binary = b"\x00\x00\x00\x00" * elements
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [elements],
                    "parameters": {"binary_data_size": len(binary)},
                }
            ]
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Encoding": "deflate",
    }
    return zlib.compress(header + binary, 9), headers


def tfserving_b64_items(items: int) -> bytes:
    """TF Serving `instances` of `items` empty {"b64": ""} objects, gzipped."""
    document = b'{"instances": [' + b",".join([b'{"b64": ""}'] * items) + b"]}"
    return gzip.compress(document, 9)


def nested_json(depth: int, key: str) -> bytes:
    return b'{"' + key.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"


def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(b" " * inflated, 9)


BOUNDARY = "catdogboundary"


def multipart(parts: int) -> bytes:
    part = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=files; filename=a.png\r\n\r\nx\r\n"
    return part.encode() * parts + f"--{BOUNDARY}--\r\n".encode()


def multipart_type() -> str:
    return f"multipart/form-data; boundary={BOUNDARY}"


# --- raw HTTP ----------------------------------------------------------------------------------------


def _address(base_url: str) -> tuple[str, int]:
    url = httpx.URL(base_url)
    return url.host, url.port or 80


def raw_exchange(base_url: str, request: bytes, timeout: float = 30) -> str:
    """Send raw bytes, read until the server closes or a full head arrives: the status, or what happened."""
    with socket.create_connection(_address(base_url), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed" if not data else f"partial:{data[:40]!r}"
                data += chunk
        except TimeoutError:
            return "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    content_type = next(
        (
            value.strip()
            for name, _, value in (
                h.partition(":") for h in data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            )
            if name.lower() == "content-type"
        ),
        "",
    )
    parts = line.split()
    status = parts[1] if len(parts) > 1 else line
    return f"{status} {content_type.split(';')[0]}".strip()


def streamed_header(base_url: str, value_bytes: int) -> list[str]:
    """One header value of `value_bytes`, streamed in 64 KiB pieces; stops when the server answers."""
    with socket.create_connection(_address(base_url), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        piece = b"a" * 65536
        sent = 0
        sock.settimeout(0.0)
        answer = b""
        try:
            while sent < value_bytes:
                try:
                    sock.sendall(piece)
                except BlockingIOError:
                    time.sleep(0.005)
                sent += len(piece)
                try:
                    answer += sock.recv(65536)
                except BlockingIOError:
                    continue
                if answer:
                    break
            if not answer:
                sock.setblocking(True)
                sock.settimeout(30)
                sock.sendall(b"\r\n\r\n")
                answer = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return [f"reset after {sent} bytes"]
    status = answer.split(b"\r\n", 1)[0].decode("latin-1").split()
    return [f"{status[1] if len(status) > 1 else 'closed'} after {sent // 1024} KiB sent"]


def held_connections(base_url: str, count: int, hold_s: float, trickle: bytes | None) -> list[str]:
    """Open `count` connections and hold them `hold_s` seconds: silent, or sending `trickle` one byte
    every 2 s (slowloris). Returns how many of them the server answered or closed on its own."""
    sockets: list[socket.socket] = []
    for _ in range(count):
        try:
            sockets.append(socket.create_connection(_address(base_url), timeout=5))
        except OSError:
            break
    closed = 0
    try:
        deadline = time.monotonic() + hold_s
        position = 0
        while time.monotonic() < deadline:
            if trickle is not None:
                for sock in sockets:
                    with contextlib.suppress(OSError):
                        sock.sendall(trickle[position % len(trickle) : position % len(trickle) + 1])
                position += 1
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        for sock in sockets:
            sock.setblocking(False)
            try:
                if sock.recv(65536) == b"":
                    closed += 1
                else:
                    closed += 1  # answered (408 / 400), then closed or closing
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
    finally:
        for sock in sockets:
            sock.close()
    return [f"{closed}/{len(sockets)} closed by the server"]


# --- the cases ---------------------------------------------------------------------------------------


def _post(
    path: str, body: bytes | Callable[[], bytes], headers: dict[str, str], repeat: int = 1
) -> Callable[[str], list[str]]:
    """POST `body` (or what `body()` makes, when the case runs) `repeat` times: the statuses."""

    def run(base_url: str) -> list[str]:
        content = body() if callable(body) else body
        statuses = []
        with httpx.Client(base_url=base_url, timeout=600) as client:
            for _ in range(repeat):
                try:
                    statuses.append(str(client.post(path, content=content, headers=headers).status_code))
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)
        return statuses

    return run


def _upload(data: Callable[[], bytes], content_type: str) -> Callable[[str], list[str]]:
    def run(base_url: str) -> list[str]:
        return _post("/predict", data(), {"Content-Type": content_type})(base_url)

    return run


def _batch(data: Callable[[], bytes], count: int) -> Callable[[str], list[str]]:
    def run(base_url: str) -> list[str]:
        files = [("files", (f"{i}.img", data(), "application/octet-stream")) for i in range(count)]
        with httpx.Client(base_url=base_url, timeout=600) as client:
            return [str(client.post("/predict/batch", files=files).status_code)]

    return run


def _v2(elements: int) -> Callable[[str], list[str]]:
    def run(base_url: str) -> list[str]:
        body, headers = v2_bytes_elements(elements)
        return _post("/v2/models/catdog/infer", body, headers)(base_url)

    return run


def _raw(request: bytes) -> Callable[[str], list[str]]:
    return lambda base_url: [raw_exchange(base_url, request)]


def cases() -> list[Case]:
    json_headers = {"Content-Type": "application/json"}
    gzip_json = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return [
        # Round 1: images and uploads.
        Case("png16_bomb", "6320x6320 16-bit PNG, 90 KB -> 80 MB", _upload(png16, "image/png")),
        Case("rgba_png_40mp", "40 MP RGBA PNG", _upload(rgba_png, "image/png")),
        Case("png_header_100k", "PNG header declaring 100000x100000", _upload(lambda: png_declaring(100_000, 100_000), "image/png")),
        Case("truncated_jpeg", "a third of a JPEG", _upload(truncated_jpeg, "image/jpeg")),
        Case("garbage", "random-looking bytes as image/png", _upload(lambda: bytes(range(256)) * 64, "image/png")),
        Case("empty", "0 bytes", _upload(lambda: b"", "image/png")),
        Case("multipart_200k_parts", "200,000 tiny parts to /predict/batch", _post("/predict/batch", lambda: multipart(200_000), {"Content-Type": multipart_type()})),
        Case("png16_batch_8", "eight 16-bit PNG bombs in one batch", _batch(png16, 8), 8),
        # Round 2: metadata CPU bombs, formats the estimate missed.
        Case("exif_segments_2mb", "2 MB of 16-byte Exif APP1 segments", _upload(lambda: exif_segments_jpeg(2 << 20), "image/jpeg")),
        Case("exif_segments_10mb", "10 MB of 16-byte Exif APP1 segments", _upload(lambda: exif_segments_jpeg(10 << 20), "image/jpeg")),
        Case("webp_lossless_40mp", "40 MP lossless WebP, ~2 KB", _upload(webp_lossless, "image/webp")),
        Case("webp_lossless_batch_32", "32 of them in one batch", _batch(webp_lossless, 32), 32),
        Case("gif_40mp", "40 MP GIF", _upload(gif_40mp, "image/gif")),
        Case("bmp_rle8_40mp", "40 MP BMP RLE8, 1 KB", _upload(bmp_rle8, "image/bmp")),
        Case("tiff_deflate_40mp", "40 MP deflate TIFF", _upload(tiff_deflate, "image/tiff")),
        # Round 2: protocol bodies.
        Case("v2_deflate_15m_elements", "130 KB deflate V2 body, 14.9M BYTES elements", _v2(14_900_000)),
        Case("tfs_gzip_4m_b64", "85 KB gzip TF Serving body, 4M {\"b64\": \"\"}", _post("/v1/models/catdog:predict", lambda: tfserving_b64_items(4_000_000), gzip_json)),
        Case("tfs_gzip_bomb", "gzip of 200 MB of spaces", _post("/v1/models/catdog:predict", lambda: gzip_bomb(200 << 20), gzip_json)),
        Case("tfs_nested_1000", "JSON nested 1000 deep", _post("/v1/models/catdog:predict", nested_json(1000, "instances"), json_headers)),
        Case("tfs_nested_100000", "JSON nested 100000 deep", _post("/v1/models/catdog:predict", nested_json(100_000, "instances"), json_headers)),
        Case("v2_nested_100000", "JSON nested 100000 deep", _post("/v2/models/catdog/infer", nested_json(100_000, "inputs"), json_headers)),
        # Round 2: HTTP.
        Case("header_160mb", "one 160 MB header value, streamed", lambda url: streamed_header(url, 160 << 20)),
        Case("headers_100kb", "one 100 KB header", _raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100_000 + b"\r\n\r\n")),
        Case("headers_10000", "10,000 headers", _raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n")),
        Case("bad_header_name", "a header name with a space", _raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n")),
        Case("cl_te_conflict", "Content-Length and chunked together", _raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        Case("bad_chunk_size", "a chunk size that is not hex", _raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")),
        Case("unknown_method", "FOO / HTTP/1.1", _raw(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n")),
        Case("idle_1025", "1,025 connections that send nothing, held 15 s", lambda url: held_connections(url, 1025, 15, None)),
        Case("slowloris_300", "300 connections sending a header 1 byte per 2 s, 15 s", lambda url: held_connections(url, 300, 15, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 100)),
    ]  # fmt: skip
