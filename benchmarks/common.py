"""Helpers shared by the benchmarks: a loopback server (port, start, readiness), and photos to send.

Importable as `benchmarks.common` when a benchmark runs as a module from the repo root
(`python -m benchmarks.throughput`); `catdog`, `app` and `training` come from the editable install.
The tests keep their own copies in tests/ (servers.py, images.py): benchmarks do not import tests.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

from PIL import Image

from catdog.client import Client

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(base_url: str, timeout: float) -> None:
    """Poll `GET /readyz` until it answers 200; TimeoutError after `timeout` seconds."""
    with Client(base_url, timeout=2) as client:
        client.wait_ready(timeout)


def start_service(
    model_dir: Path | None,
    *,
    log_level: str = "WARNING",
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    timeout: float = 180,
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m app serve` (never training) on a free loopback port, ready; (process, base URL).

    `model_dir`: None serves the default. The caller terminates the process.
    """
    port = free_port()
    env = {**os.environ, "CATDOG_PORT": str(port), "CATDOG_HOST": "127.0.0.1", "CATDOG_LOG_LEVEL": log_level}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if model_dir is not None:
        env["CATDOG_MODEL_DIR"] = str(model_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--no-auto-train"],
        cwd=REPO_ROOT,
        env=env,
        stdout=stdout,
        stderr=stderr,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, timeout=timeout)
    except BaseException:
        process.kill()
        raise
    return process, base_url


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
