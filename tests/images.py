"""Generated test images: every Pillow mode the service must accept, and broken files it must refuse."""

from __future__ import annotations

import io

from PIL import Image

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", size, color), fmt)


def red_png() -> bytes:
    """The tiny test model calls red images 'cat'."""
    return solid(RED)


def blue_jpeg() -> bytes:
    """...and blue ones 'dog'."""
    return solid(BLUE, fmt="JPEG")


def truncated_jpeg() -> bytes:
    data = solid(RED, size=(256, 256), fmt="JPEG")
    return data[: len(data) // 2]
