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
from tests.images import BLUE, RED, bmp_rle, encode, solid, truncated_jpeg

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


def _per_pixel(image: Image.Image, fmt: str = "PNG", **params: object) -> float:
    """decode_cost's bytes per pixel without its fixed overhead and margin (no draft size: no resize)."""
    from catdog.imaging import _DECODE_OVERHEAD, _MARGIN, decode_cost, probe_image

    cost = decode_cost(probe_image(encode(image, fmt, **params), BIG))
    return round((cost / _MARGIN - _DECODE_OVERHEAD) / (image.width * image.height), 2)


def test_decode_cost_is_bytes_of_the_stored_mode_plus_conversion_copies() -> None:
    size = (300, 200)
    assert _per_pixel(Image.new("RGB", size)) == 4  # Pillow stores RGB as RGBX
    assert _per_pixel(Image.new("I;16", size)) == 2  # resized in its own mode: no copies
    assert _per_pixel(Image.new("L", size)) == 1 + 4
    assert _per_pixel(Image.new("P", size)) == 1 + 4
    assert _per_pixel(Image.new("RGBA", size)) == 4 + 4 + 4 + 4  # background, composite, RGB
    assert _per_pixel(Image.new("LA", size)) == 4 + 4 + 4 + 4 + 4  # an RGBA copy first
    assert _per_pixel(Image.fromarray(np.zeros((200, 300), np.float32), "F"), "TIFF") == 4


def test_decode_cost_counts_the_rotated_copy() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    image = Image.new("RGB", (300, 200))
    assert _per_pixel(image, "JPEG") == 4
    assert _per_pixel(image, "JPEG", exif=exif.tobytes()) == 4 + 4
    assert _per_pixel(image, "PNG", exif=exif.tobytes()) == 4 + 4


def test_decode_cost_reads_the_header_only() -> None:
    """Pillow's PNG plugin decodes the whole image when asked for its Exif: the estimate must not ask,
    or the pixels would be in memory before the budget admitted them."""
    from catdog.imaging import decode_cost, probe_image

    for data in (encode(Image.new("RGB", (64, 48)), "PNG"), solid(RED, fmt="JPEG")):
        image = probe_image(data, BIG)
        decode_cost(image)
        assert image.tile, "decode_cost decoded the image"
    # A PNG whose Exif follows its pixels counts as rotated, unread.
    exif = Image.Exif()
    exif[0x0112] = 6
    late = encode(Image.new("RGB", (300, 200)), "PNG", exif=exif.tobytes())
    idat = late.find(b"IDAT") - 4
    exif_chunk = late[late.find(b"eXIf") - 4 : idat]
    late = late.replace(exif_chunk, b"")
    late = late[: late.rfind(b"IEND") - 4] + exif_chunk + late[late.rfind(b"IEND") - 4 :]
    image = probe_image(late, BIG)
    assert "exif" not in image.info
    plain = probe_image(encode(Image.new("RGB", (300, 200)), "PNG"), BIG)
    assert decode_cost(image) > decode_cost(plain)
    assert image.tile
    assert load_model_input(late, 8, BIG).shape == (8, 8, 3)


def test_progressive_jpeg_counts_its_full_size_coefficients() -> None:
    from catdog.imaging import _DECODE_OVERHEAD, _MARGIN, decode_cost, probe_image

    image = Image.new("RGB", (1600, 1200), BLUE)
    baseline = probe_image(encode(image, "JPEG"), BIG, draft_size=(32, 32))
    progressive = probe_image(encode(image, "JPEG", progressive=True), BIG, draft_size=(32, 32))
    assert baseline.size == progressive.size == (200, 150)
    frame = 200 * 150 * 4
    assert decode_cost(baseline) < (_DECODE_OVERHEAD + 2 * frame) * _MARGIN
    # 4:2:0 subsampling: 1.5 samples per pixel, 2 bytes each, at full size, whatever the draft scale.
    coefficients = int(1600 * 1200 * 1.5 * 2)
    assert decode_cost(progressive) == int((_DECODE_OVERHEAD + frame + coefficients) * _MARGIN)


# Peak bytes per pixel of load_model_input(data, 336, 40 MP), measured at 20 MP by
# `python -m benchmarks.decode_memory` (BMP RLE at 2 MP, the most accepted). Every one of these
# formats was estimated below its peak before (WebP at 3 bytes a pixel against 16).
MEASURED_BYTES_PER_PIXEL = {
    "PNG RGB": 4.26,
    "PNG RGBA": 16.01,
    "PNG P": 5.26,
    "PNG P+transparency": 17.00,
    "PNG LA": 20.01,
    "PNG rotated": 8.39,
    "GIF": 5.25,
    "WEBP lossy": 16.01,
    "WEBP lossless": 16.00,
    "WEBP lossy+alpha": 24.94,
    "WEBP animated": 24.00,
    "BMP RGB": 4.27,
    "BMP RLE8": 5.85,
    "BMP RLE4": 5.87,
    "TIFF RGB": 4.28,
    "TIFF CMYK": 8.29,
}


def _variant(name: str, size: tuple[int, int]) -> bytes:
    rgb = Image.new("RGB", size, BLUE)
    rgba = Image.new("RGBA", size, (*BLUE, 128))
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [rgba, Image.new("RGBA", size, (*RED, 128))]
    builders = {
        "PNG RGB": lambda: encode(rgb),
        "PNG RGBA": lambda: encode(rgba),
        "PNG P": lambda: encode(rgb.convert("P")),
        "PNG P+transparency": lambda: encode(rgb.convert("P"), "PNG", transparency=0),
        "PNG LA": lambda: encode(rgba.convert("LA")),
        "PNG rotated": lambda: encode(rgb, "PNG", exif=exif.tobytes()),
        "GIF": lambda: encode(rgb, "GIF"),
        "WEBP lossy": lambda: encode(rgb, "WEBP", quality=50),
        "WEBP lossless": lambda: encode(rgb, "WEBP", lossless=True),
        "WEBP lossy+alpha": lambda: encode(rgba, "WEBP", quality=50),
        "WEBP animated": lambda: encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "BMP RGB": lambda: encode(rgb, "BMP"),
        "BMP RLE8": lambda: bmp_rle(*size, bits=8),
        "BMP RLE4": lambda: bmp_rle(*size, bits=4),
        "TIFF RGB": lambda: encode(rgb, "TIFF"),
        "TIFF CMYK": lambda: encode(rgb.convert("CMYK"), "TIFF"),
    }
    return builders[name]()


@pytest.mark.parametrize("name", sorted(MEASURED_BYTES_PER_PIXEL))
def test_decode_cost_covers_the_measured_peak(name: str) -> None:
    """The estimate is at least the peak benchmarks/decode_memory.py measured for the format."""
    from catdog.imaging import decode_cost, probe_image

    size = (1600, 1200)
    image = probe_image(_variant(name, size), BIG, draft_size=(336, 336))
    assert image.size == size
    assert decode_cost(image) >= MEASURED_BYTES_PER_PIXEL[name] * size[0] * size[1]


def test_over_budget_is_a_too_large_error_naming_the_budget() -> None:
    from catdog.imaging import ImageOverBudgetError

    data = encode(Image.new("RGBA", (1000, 1000)), "PNG")  # 16 bytes a pixel, ~2 MiB fixed: ~19 MB
    with pytest.raises(ImageOverBudgetError, match="decode memory budget of 16000000 bytes") as info:
        load_model_input(data, 8, BIG, max_decode_bytes=16_000_000)
    assert isinstance(info.value, ImageTooLargeError)
    assert load_model_input(data, 8, BIG, max_decode_bytes=20_000_000).shape == (8, 8, 3)


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
