"""Helpers shared by the benchmarks: a loopback server's port and readiness, and photos to send.

Importable as `benchmarks.common` when a benchmark runs as a module from the repo root
(`python -m benchmarks.throughput`); `catdog`, `app` and `training` come from the editable install.
The tests keep their own copies in tests/ (servers.py, images.py): benchmarks do not import tests.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

from PIL import Image

from catdog.client import Client


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(base_url: str, timeout: float) -> None:
    """Poll `GET /readyz` until it answers 200; TimeoutError after `timeout` seconds."""
    with Client(base_url, timeout=2) as client:
        client.wait_ready(timeout)


def generated_photos() -> list[bytes]:
    """Two small solid-colour images (a PNG and a JPEG), for when no real photos are at hand."""
    photos = []
    for color, fmt in (((220, 20, 20), "PNG"), ((20, 20, 220), "JPEG")):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), color).save(buffer, format=fmt)
        photos.append(buffer.getvalue())
    return photos


def sample_photos(data_dir: Path, limit: int = 32) -> list[bytes]:
    """Up to `limit` JPEGs spread evenly over `data_dir`/validation/<class>/, else generated images."""
    all_paths = sorted((data_dir / "validation").glob("*/*.jpg"))
    paths = all_paths[:: max(1, len(all_paths) // limit)][:limit]
    if paths:
        return [path.read_bytes() for path in paths]
    return generated_photos()
