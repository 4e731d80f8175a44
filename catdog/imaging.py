"""Turn uploaded bytes into the uint8 RGB array the model expects.

This module is the single image pipeline of the project: the training module loads every photo
through `load_model_input` too, so a photo is decoded, oriented, converted and resized the same
way when the model learns from it and when the service classifies it. Only numpy and Pillow are
imported here, so training does not pull in the web stack.

Before Pillow parses anything, `check_structure` walks the file's container (JPEG marker segments,
PNG chunks, GIF blocks, the TIFF directory, a BMP's RLE stream) with cheap reads and refuses a file
whose structure would make Pillow's Python-level parsing, or libjpeg's scan loop, take seconds of CPU;
`decode_cost` then estimates from the header the memory that decoding will take, so the service can
admit it against its decode budget before a single pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from catdog import image_structure

# Formats we accept. Pillow knows many more (EPS shells out to Ghostscript, for one); a classifier
# for photos has no business parsing those, so they are rejected before any plugin touches the data.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# Media types a client may declare for the formats above.
SUPPORTED_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
    }
)

# Background used where an image is transparent: a cat on a transparent PNG should look like a
# cat on paper, not a cat on whatever colour the hidden pixels happen to hold.
_BACKGROUND = (255, 255, 255)

# Pillow refuses images over twice this many pixels on its own; we check our own, lower limit
# first, and this keeps Pillow's global guard from firing before ours with a different message.
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(ValueError):
    """The bytes are not an image we can classify."""


class EmptyImageError(ImageDecodeError):
    """No bytes were sent."""


class UndecodableImageError(ImageDecodeError):
    """The bytes are not a readable image in a supported format."""


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than allowed (a decompression bomb, or just too big)."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} pixels"
        )
        self.width = width
        self.height = height
        self.max_pixels = max_pixels


class ImageTooComplexError(UndecodableImageError):
    """The file's structure is over a bound on the work of parsing it (thousands of metadata segments,
    chunks, scans or strips): no camera or editor writes such a file, and Pillow would spend seconds to
    minutes of CPU on it. `limit` is the bound that was passed."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class ImageOverBudgetError(ImageTooLargeError):
    """Decoding the image would take more memory than the decode budget allows."""

    def __init__(self, width: int, height: int, mode: str, cost_bytes: int, budget_bytes: int) -> None:
        ImageDecodeError.__init__(
            self,
            f"image is {width}x{height} in mode {mode}: decoding it takes about {cost_bytes} bytes, "
            f"over the decode memory budget of {budget_bytes} bytes",
        )
        self.width = width
        self.height = height
        self.max_pixels = 0
        self.cost_bytes = cost_bytes
        self.budget_bytes = budget_bytes


# --- decode memory ----------------------------------------------------------------------------------
#
# The bytes per pixel below account for the peaks benchmarks/decode_memory.py measures (every format
# and mode, ~20 MP each, RSS of a fresh process); tests/unit/test_imaging.py holds decode_cost to them.


def mode_bytes(mode: str) -> int:
    """Bytes per pixel Pillow stores `mode` in: 1 for 1, L and P, 2 for I;16*, 4 for everything else
    (RGB is stored as RGBX; LA and PA take 4 too)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


# Bytes per pixel of the full-size copies `to_rgb` makes on the way to RGB, all alive at its peak:
# RGBA: white background, composite, RGB; LA, La, PA (and P with transparency): an RGBA copy first.
_CONVERT_BYTES = {"RGB": 0, "RGBA": 4 + 4 + 4, **dict.fromkeys(("LA", "La", "PA", "RGBa"), 4 + 4 + 4 + 4)}
# Extra bytes per pixel while a format's decoder runs, on top of the decoded frame: libwebp's
# animation decoder (used for every WebP) holds two RGBA canvases and hands over a copy of one;
# Pillow's Python RLE decoder for BMP grows a bytearray of the pixels, then copies it.
_LOAD_BYTES = {"WEBP": 4 + 4 + 4, "BMP RLE": 3}
# ...and those still held once the frame is decoded: the WebP canvases live as long as the image.
_HELD_BYTES = {"WEBP": 4 + 4}
# Fixed cost of any decode: decoder state and read buffers, Pillow's and numpy's small images.
_DECODE_OVERHEAD = 2 * 1024 * 1024
# On top of the whole estimate: the measured peaks sit within 1% of the model above at 40 MP.
_MARGIN = 1.05
_HIGH_DEPTH = ("I", "F")  # mode prefixes: I, I;16, I;16B, I;16L, I;16N, F
_EXIF_ORIENTATION = 0x0112
_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG followed by more pictures; the first is decoded


@dataclass(frozen=True)
class _Probe:
    """What probe_image learnt from the bytes that decode_cost needs and Pillow does not keep."""

    full_size: tuple[int, int]  # before JPEG draft scaling
    target: tuple[int, int] | None  # the model input (`draft_size`)
    data_bytes: int
    late_exif: bool  # a PNG with Exif or XMP that Pillow reads only while decoding


def _probe_of(image: Image.Image) -> _Probe:
    probe = getattr(image, "_catdog_probe", None)
    return probe if isinstance(probe, _Probe) else _Probe(image.size, None, 0, False)


def _is_high_depth(mode: str) -> bool:
    return mode.startswith(_HIGH_DEPTH)


def decode_cost(image: Image.Image) -> int:
    """Peak bytes of turning an opened (not yet loaded) image into the model input, estimated from its
    header, never by decoding. The larger of two phases:

    - decoding: the frame in its own mode (after JPEG draft scaling), plus what the decoder holds
      meanwhile: a progressive JPEG's coefficients at full size whatever the draft scale, libwebp's
      canvases, the Python RLE decoder's buffers;
    - converting: the frame, what the decoder still holds, the EXIF rotation's copy, the full-size
      copies `to_rgb` makes (none for high-bit-depth and float images, resized in their own mode
      first), and the resize's intermediate image and filter weights (probe_image's `draft_size`
      is the model input).
    """
    probe = _probe_of(image)
    width, height = image.size
    mode = image.mode
    fmt = image.format or ""
    if fmt == "BMP" and image.info.get("compression") in (1, 2):
        fmt = "BMP RLE"
    frame = mode_bytes(mode)
    pixels = width * height
    held = probe.data_bytes if fmt == "WEBP" else 0  # libwebp's own copy of the file
    load = held + pixels * (frame + _LOAD_BYTES.get(fmt, 0))
    if fmt in _JPEG_FORMATS and (image.info.get("progressive") or image.info.get("progression")):
        full_w, full_h = probe.full_size
        layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * 3
        max_h = max(layer[1] for layer in layers)
        max_v = max(layer[2] for layer in layers)
        samples = sum(layer[1] * layer[2] for layer in layers) / (max_h * max_v)
        load += int(full_w * full_h * samples * 2)  # 16-bit DCT coefficients per sample
    per_pixel = frame + _HELD_BYTES.get(fmt, 0)
    resize_bytes = frame
    if not _is_high_depth(mode):
        converted = mode
        if mode == "P":
            converted = "PA" if "transparency" in image.info else "P"
        per_pixel += _CONVERT_BYTES.get(converted, 4)
        resize_bytes = 4
    frame_w, frame_h = width, height
    if _may_rotate(image, probe):
        per_pixel += frame  # the transposed copy of the frame
        frame_w = frame_h = max(width, height)
    # Pillow resizes in two passes, the one that leaves the smaller intermediate image first; its
    # filter weights take ~24 bytes per source row and column.
    resize = 0
    if probe.target is not None:
        target_w, target_h = probe.target
        resize = min(target_w * frame_h, frame_w * target_h) * resize_bytes + 24 * (width + height)
        resize += target_w * target_h * (4 + 3)  # the resized RGB image and the model input array
    convert = held + pixels * per_pixel + resize
    return int((_DECODE_OVERHEAD + max(load, convert)) * _MARGIN)


def _may_rotate(image: Image.Image, probe: _Probe) -> bool:
    """Whether the EXIF orientation (read without decoding) asks for a rotation or flip. Pillow's PNG
    plugin decodes the whole image to look for an eXIf chunk after the pixels: a PNG whose header has
    no Exif counts as rotated when probe_image saw Exif or XMP anywhere in the file."""
    if image.format == "PNG" and "exif" not in image.info:
        return probe.late_exif
    return _orientation(image) not in (None, 1)


def _orientation(image: Image.Image) -> int | None:
    exif = image.info.get("exif")
    if isinstance(exif, bytes):
        with _structure_bounds():
            image_structure.check_ifd(exif, image.format or "image")
    try:
        value = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:
        return None
    return value if isinstance(value, int) else None


@contextlib.contextmanager
def _structure_bounds() -> Iterator[None]:
    try:
        yield
    except image_structure.StructureBoundError as exc:
        raise ImageTooComplexError(str(exc), exc.limit) from exc


def probe_image(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open `data` and read its header only: structure bounds (catdog/image_structure.py), format
    allow-list, size, pixel limit, then a JPEG's scan count; nothing is decoded.

    `draft_size` (the model input) lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while it
    decodes, never below that size: a 48-megapixel photo destined for a 224x224 input is decoded at
    1/8 scale. The pixel limit applies to what will actually be decoded, so such a photo passes while
    a PNG, TIFF or GIF of the same size (which has no cheap reduced decode) is refused here.
    """
    if not data:
        raise EmptyImageError("the uploaded image is empty (0 bytes)")
    with _structure_bounds():
        first_scan = image_structure.check_structure(data)
    canvas = image_structure.webp_canvas_size(data)
    if canvas is not None and canvas[0] * canvas[1] > max_pixels:
        # libwebp allocates its canvases when Pillow opens the file: refuse before that.
        raise ImageTooLargeError(canvas[0], canvas[1], max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise UndecodableImageError(
            "the upload is not a decodable image; supported formats: " + ", ".join(SUPPORTED_FORMATS)
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UndecodableImageError(f"the image header is corrupt: {exc}") from exc

    width, height = image.size
    if width <= 0 or height <= 0:
        raise UndecodableImageError(f"the image has an invalid size {width}x{height}")
    exif = image.info.get("exif")
    if isinstance(exif, bytes):
        with _structure_bounds():  # parsed later, by decode_cost's orientation
            image_structure.check_ifd(exif, image.format or "image")
    late_exif = image.format == "PNG" and any(
        marker in data for marker in (b"eXIf", b"XML:com.adobe.xmp", b"Raw profile type exif")
    )
    probe = _Probe(image.size, draft_size, len(data), late_exif)
    image._catdog_probe = probe  # type: ignore[attr-defined]
    if draft_size is not None and image.format in _JPEG_FORMATS:
        try:
            image.draft(image.mode, draft_size)
        except (OSError, ValueError) as exc:
            raise UndecodableImageError(f"the image header is corrupt: {exc}") from exc
        width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(width, height, max_pixels)
    if first_scan is not None and image.format in _JPEG_FORMATS:
        with _structure_bounds():
            image_structure.check_scans(data, first_scan, probe.full_size[0] * probe.full_size[1])
    return image


def check_decode_budget(image: Image.Image, budget_bytes: int | None) -> int:
    """`decode_cost(image)`; ImageOverBudgetError when it is over `budget_bytes` (None: no budget)."""
    cost = decode_cost(image)
    if budget_bytes is not None and cost > budget_bytes:
        width, height = image.size
        raise ImageOverBudgetError(width, height, image.mode, cost, budget_bytes)
    return cost


def decode_image(image: Image.Image) -> Image.Image:
    """Decode the first frame of an image `probe_image` opened (an animation stays on frame one)."""
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError) as exc:
        raise UndecodableImageError(f"the image data is corrupt or truncated: {exc}") from exc
    return image


def open_image(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open and fully decode the first frame of `data`, checking the pixel limit before decoding."""
    return decode_image(probe_image(data, max_pixels, draft_size))


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the camera's EXIF orientation tag says, so a portrait photo stands upright.

    The image itself when it needs neither: unlike `ImageOps.exif_transpose`, no full-size copy, and
    no rewriting of the Exif block (which re-encodes every tag in Python). A malformed EXIF block
    counts as no orientation: it must not make a good picture unreadable.
    """
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(_orientation(image) or 1)
    return image if transpose is None else image.transpose(transpose)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_depth_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _high_depth_scale(image: Image.Image) -> float:
    """Divisor mapping a 16/32-bit integer or float grayscale image's nominal range onto 0..255.

    Decided from the whole image's extremes (`getextrema`, no copy), so resizing first does not
    change it.
    """
    if image.mode.startswith("I;16"):
        return 257.0
    try:
        _, high = image.getextrema()
    except (ValueError, TypeError):  # pragma: no cover - every I/F image has extremes
        return 1.0
    high = float(high)  # type: ignore[arg-type]
    if image.mode == "F":
        # Float images are conventionally 0..1; anything larger is treated as 0..255.
        return 1.0 / 255.0 if high <= 1.0 else 1.0
    return 257.0 if high > 255.0 else 1.0  # 32-bit "I" holding 16-bit data


def _high_depth_to_l(image: Image.Image, scale: float | None = None) -> Image.Image:
    """Map 16/32-bit integer or float grayscale to 8 bits by its nominal range, not by clipping.

    Row block by row block, so a full-size image never has a full-size float copy.
    """
    if scale is None:
        scale = _high_depth_scale(image)
    pixels = np.asarray(image)
    out = np.empty(pixels.shape, dtype=np.uint8)
    rows = max(1, (1 << 20) // max(1, pixels.shape[1]))  # about a million pixels per block
    for start in range(0, pixels.shape[0], rows):
        block = pixels[start : start + rows].astype(np.float32) / np.float32(scale)
        out[start : start + rows] = np.clip(np.rint(block), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _high_depth_model_input(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """A high-bit-depth or float frame, resized in its own mode first: the only full-size buffer is
    the decoded frame; the mapping to 8 bits and the orientation apply to the small result."""
    scale = _high_depth_scale(image)
    orientation = _orientation(image)
    # BOX (the area average) rather than the BILINEAR of 8-bit images: Pillow cannot `reduce()` these
    # modes, and at 40 MP BILINEAR costs ~0.13 s of CPU against BOX's ~0.05 (a 16-bit PNG bomb
    # decodes in ~0.35 s); both average every source pixel, so the picture is the same to a few levels.
    small = image.resize(target, Image.Resampling.BOX) if image.size != target else image
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation or 1)
    if transpose is not None:
        small = small.transpose(transpose)
    return _high_depth_to_l(small, scale).convert("RGB")


def model_input_from_image(image: Image.Image, image_size: int) -> np.ndarray:
    """Decode a probed image (see `probe_image`) into a (image_size, image_size, 3) uint8 array."""
    target = (image_size, image_size)
    image = decode_image(image)
    if _is_high_depth(image.mode):
        image = _high_depth_model_input(image, target)
    else:
        image = to_rgb(apply_exif_orientation(image))
    if image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_model_input(
    data: bytes, image_size: int, max_pixels: int, max_decode_bytes: int | None = None
) -> np.ndarray:
    """Decode `data` into a (image_size, image_size, 3) uint8 array: the model's input.

    The whole picture is squashed to a square (no crop), matching how the model was trained.
    `max_decode_bytes`: refuse (ImageOverBudgetError) an image whose decoding would take more memory.
    """
    image = probe_image(data, max_pixels=max_pixels, draft_size=(image_size, image_size))
    check_decode_budget(image, max_decode_bytes)
    return model_input_from_image(image, image_size)
