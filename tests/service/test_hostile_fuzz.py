"""Mutation fuzzing of image decoding: corrupted real photos and generated files of every format.

Seeded and bounded: the same few hundred mutants every run. Each must decode to a model input or
raise `ImageDecodeError` (a 400/413 in the API), never anything else; through the API every answer
is 200, 400 or 413 JSON, never a 500.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from catdog.imaging import ImageDecodeError, load_model_input
from tests.conftest import DATA_DIR
from tests.images import BLUE, RED, encode

SEED = 20261125
MUTANTS_PER_SEED = 30
MiB = 1024 * 1024
# Pillow warns (UserWarning) about the corrupt TIFF tags it skips; expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def seed_files() -> list[bytes]:
    photos = sorted((DATA_DIR / "validation").glob("*/*.jpg"))[::250][:4]
    gradient = Image.fromarray(np.linspace(0, 255, 48 * 40 * 3).astype(np.uint8).reshape(40, 48, 3))
    generated = [
        encode(gradient, "PNG"),
        encode(gradient, "JPEG", progressive=True),
        encode(gradient.convert("P"), "GIF"),
        encode(gradient, "WEBP"),
        encode(gradient, "BMP"),
        encode(gradient, "TIFF", compression="tiff_lzw"),
        encode(Image.new("RGBA", (30, 20), (*RED, 100)), "PNG"),
        encode(Image.new("I;16", (40, 30), 40000), "PNG"),
        encode(Image.new("CMYK", (30, 30), (200, 10, 10, 0)), "TIFF"),
        encode(
            Image.new("RGB", (30, 30), BLUE), "GIF", save_all=True, append_images=[Image.new("RGB", (30, 30))]
        ),
    ]
    return [path.read_bytes() for path in photos] + generated


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buffer = bytearray(data)
    kind = rng.integers(0, 5)
    if kind == 0:  # flip a few bits, mostly in the header where the structure is
        for _ in range(int(rng.integers(1, 9))):
            index = int(rng.integers(0, min(len(buffer), 512)))
            buffer[index] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # truncate
        del buffer[int(rng.integers(1, len(buffer))) :]
    elif kind == 2:  # overwrite a run with 0x00 or 0xFF (sizes, lengths, counts)
        start = int(rng.integers(0, len(buffer)))
        run = int(rng.integers(1, 16))
        buffer[start : start + run] = bytes([0xFF if rng.integers(0, 2) else 0x00]) * len(
            buffer[start : start + run]
        )
    elif kind == 3:  # duplicate a chunk
        start = int(rng.integers(0, len(buffer)))
        buffer[start:start] = buffer[start : start + int(rng.integers(1, 256))]
    else:  # random bytes anywhere
        for _ in range(int(rng.integers(1, 32))):
            buffer[int(rng.integers(0, len(buffer)))] = int(rng.integers(0, 256))
    return bytes(buffer)


def mutants() -> list[bytes]:
    rng = np.random.default_rng(SEED)
    return [mutate(seed, rng) for seed in seed_files() for _ in range(MUTANTS_PER_SEED)]


def test_mutated_images_decode_or_raise_image_decode_error() -> None:
    outcomes = {"decoded": 0, "refused": 0}
    for index, data in enumerate(mutants()):
        try:
            array = load_model_input(data, 32, max_pixels=40_000_000, max_decode_bytes=256 * MiB)
        except ImageDecodeError:
            outcomes["refused"] += 1
        except Exception as exc:  # pragma: no cover - the failure this test exists to find
            pytest.fail(f"mutant {index} raised {type(exc).__name__}: {exc}")
        else:
            assert array.shape == (32, 32, 3) and array.dtype == np.uint8
            outcomes["decoded"] += 1
    # Both sides exercised: the mutations are neither all harmless nor all fatal.
    assert outcomes["decoded"] > 20 and outcomes["refused"] > 20, outcomes


def test_mutated_images_through_the_api_are_never_500(client: TestClient) -> None:
    for index, data in enumerate(mutants()[::7]):
        response = client.post(
            "/predict", files={"file": (f"mutant-{index}", data, "application/octet-stream")}
        )
        assert response.status_code in (200, 400, 413), (index, response.text)
        assert response.headers["content-type"].startswith("application/json")
