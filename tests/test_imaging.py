"""The shared image pipeline: every Pillow mode to RGB, EXIF orientation, animations, draft mode, limits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from catdog.imaging import (
    EmptyImageError,
    ImageTooLargeError,
    UndecodableImageError,
    apply_exif_orientation,
    load_model_input,
    open_image,
    to_rgb,
)
from tests.images import BLUE, RED, encode, solid, truncated_jpeg

BIG = 10_000_000


def mean_rgb(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("P", "GIF"), ("RGBA", "PNG"), ("RGBA", "WEBP"),
     ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("RGB", "BMP"), ("1", "PNG")],
)  # fmt: skip
def test_every_mode_becomes_rgb_uint8_of_model_size(mode: str, fmt: str) -> None:
    source = Image.new("RGB", (50, 30), BLUE).convert(mode)
    out = load_model_input(encode(source, fmt), image_size=24, max_pixels=BIG)
    assert out.shape == (24, 24, 3)
    assert out.dtype == np.uint8


def test_colours_survive_conversion() -> None:
    for mode, fmt in [("P", "PNG"), ("CMYK", "JPEG"), ("RGBA", "PNG")]:
        source = Image.new("RGB", (40, 40), BLUE).convert(mode)
        r, g, b = mean_rgb(load_model_input(encode(source, fmt), 16, BIG))
        assert b > 150 and r < 80 and g < 80, (mode, r, g, b)


def test_grayscale_becomes_three_equal_channels() -> None:
    out = load_model_input(encode(Image.new("L", (20, 20), 77)), 8, BIG)
    assert np.all(out == 77)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_grayscale_maps_full_range_to_8_bits(mode: str) -> None:
    image = Image.new("I;16", (20, 20), 0)
    image.paste(65535, (0, 0, 10, 20))  # left half white, right half black
    if mode != "I;16":
        image = (
            image.convert(mode)
            if mode == "I"
            else Image.frombytes("I;16B", image.size, image.tobytes("raw", "I;16B"))
        )
    rgb = np.asarray(to_rgb(image))
    assert rgb[:, :10].min() == 255, "16-bit white must stay white, not wrap or clip"
    assert rgb[:, 10:].max() == 0


def test_16_bit_png_round_trip() -> None:
    image = Image.new("I;16", (16, 16), 32896)  # mid grey in 16 bits
    out = load_model_input(encode(image, "PNG"), 8, BIG)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


def test_float_mode_is_scaled() -> None:
    image = Image.new("F", (8, 8), 0.5)
    assert np.all(np.abs(np.asarray(to_rgb(image)).astype(int) - 128) <= 1)


def test_transparent_pixels_become_white_not_black() -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert np.all(load_model_input(encode(image), 8, BIG) == 255)
    palette = Image.new("P", (20, 20), 0)
    palette.info["transparency"] = 0
    assert np.all(load_model_input(encode(palette, "PNG", transparency=0), 8, BIG) == 255)


def test_exif_orientation_is_applied() -> None:
    # Stored landscape: left half red, right half blue. Orientation 6 means "rotate 90 degrees clockwise
    # to display", so the upright picture is portrait with red on top.
    stored = Image.new("RGB", (80, 40), RED)
    stored.paste(BLUE, (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    as_stored = open_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95), BIG)
    assert as_stored.size == (80, 40)
    assert apply_exif_orientation(as_stored).size == (40, 80)
    out = load_model_input(encode(stored, "JPEG", exif=exif.tobytes(), quality=95), 32, BIG)
    top, bottom = mean_rgb(out[:12]), mean_rgb(out[-12:])
    assert top[0] > 150 and top[2] < 80, top
    assert bottom[2] > 150 and bottom[0] < 80, bottom


def test_animation_uses_first_frame() -> None:
    frames = [Image.new("RGB", (30, 30), RED), Image.new("RGB", (30, 30), BLUE)]
    for fmt in ("GIF", "WEBP", "PNG"):  # PNG = APNG
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        r, _, b = mean_rgb(load_model_input(data, 16, BIG))
        assert r > 150 and b < 80, fmt


def test_large_jpeg_is_decoded_in_draft_mode() -> None:
    data = solid(BLUE, size=(4000, 3000), fmt="JPEG")
    image = open_image(data, max_pixels=BIG * 10, draft_size=(160, 160))
    # DCT scaling by 1/8 gives 500x375: decoded smaller but never below the requested size.
    assert image.size == (500, 375)
    out = load_model_input(data, 160, BIG * 10)
    assert out.shape == (160, 160, 3)
    assert mean_rgb(out)[2] > 150


def test_pixel_limit_is_checked_before_decoding() -> None:
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")
    with pytest.raises(ImageTooLargeError) as info:
        load_model_input(bomb, 32, max_pixels=50_000_000)
    assert info.value.width == 20_000
    assert "400000000 pixels" in str(info.value)


def test_pixel_limit_allows_images_at_the_limit() -> None:
    data = solid(RED, size=(100, 100))
    assert load_model_input(data, 8, max_pixels=10_000).shape == (8, 8, 3)
    with pytest.raises(ImageTooLargeError):
        load_model_input(data, 8, max_pixels=9_999)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyImageError),
        (b"GIF89a", UndecodableImageError),
        (b"%PDF-1.4 not an image", UndecodableImageError),
        (truncated_jpeg(), UndecodableImageError),
        (encode(Image.new("RGB", (8, 8)), "ICO"), UndecodableImageError),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", UndecodableImageError),
    ],
    ids=["empty", "gif-header-only", "pdf", "truncated-jpeg", "ico-not-allowed", "eps-not-allowed"],
)
def test_bad_bytes_raise_typed_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_model_input(data, 16, BIG)


def test_same_bytes_same_array() -> None:
    """Training and serving call the same function; it must be a pure function of the bytes."""
    data = solid(RED, size=(300, 200), fmt="JPEG")
    assert np.array_equal(load_model_input(data, 64, BIG), load_model_input(data, 64, BIG))


# --- decode budget: bytes of the decoded mode, estimated from the header -------------------------


def test_decode_cost_is_bytes_of_the_decoded_mode_plus_conversion_copies() -> None:
    from catdog.imaging import decode_cost, probe_image

    def cost(image: Image.Image, fmt: str = "PNG") -> int:
        return decode_cost(probe_image(encode(image, fmt), BIG))

    pixels = 300 * 200
    assert cost(Image.new("RGB", (300, 200))) == pixels * 3
    assert cost(Image.new("I;16", (300, 200))) == pixels * 2  # resized in its own mode: no copies
    assert cost(Image.new("L", (300, 200))) == pixels * (1 + 3)
    assert cost(Image.new("RGBA", (300, 200))) == pixels * (4 + 4 + 4 + 3)
    assert cost(Image.fromarray(np.zeros((200, 300), np.float32), "F"), "TIFF") == pixels * 4


def test_progressive_jpeg_counts_its_full_size_coefficients() -> None:
    from catdog.imaging import decode_cost, probe_image

    image = Image.new("RGB", (1600, 1200), BLUE)
    baseline = probe_image(encode(image, "JPEG"), BIG, draft_size=(32, 32))
    progressive = probe_image(encode(image, "JPEG", progressive=True), BIG, draft_size=(32, 32))
    assert baseline.size == progressive.size == (200, 150)
    assert decode_cost(baseline) == 200 * 150 * 3
    # 4:2:0 subsampling: 1.5 samples per pixel, 2 bytes each, at full size, whatever the draft scale.
    assert decode_cost(progressive) == 200 * 150 * 3 + int(1600 * 1200 * 1.5 * 2)


def test_over_budget_is_a_too_large_error_naming_the_budget() -> None:
    from catdog.imaging import ImageOverBudgetError

    data = encode(Image.new("RGBA", (100, 100)), "PNG")
    with pytest.raises(ImageOverBudgetError, match="decode memory budget of 100000 bytes") as info:
        load_model_input(data, 8, BIG, max_decode_bytes=100_000)
    assert isinstance(info.value, ImageTooLargeError)
    assert load_model_input(data, 8, BIG, max_decode_bytes=200_000).shape == (8, 8, 3)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_depth_resized_first_matches_converting_first(mode: str) -> None:
    """The small-memory path (resize in the image's own mode, then map to 8 bits) agrees with mapping
    the full image first to within rounding (both area-averaged: BOX is that path's filter)."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65535, size=(90, 120)).astype(np.float64)
    if mode == "F":
        image = Image.fromarray((values / 65535).astype(np.float32), "F")  # a 0..1 float image
    elif mode == "I":
        image = Image.fromarray(values.astype(np.int32), "I")
    else:
        image = Image.fromarray(values.astype(np.uint16))  # mode I;16
    data = encode(image, "TIFF")
    fast = load_model_input(data, 16, BIG)
    slow = np.asarray(to_rgb(open_image(data, BIG)).resize((16, 16), Image.Resampling.BOX))
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1
    assert fast.mean() > 100  # the range is mapped, not clipped to black or white
