"""Turn uploaded bytes into the uint8 RGB array the model expects.

This module is the single image pipeline of the project: the training module loads every photo
through `load_model_input` too, so a photo is decoded, oriented, converted and resized the same
way when the model learns from it and when the service classifies it. Only numpy and Pillow are
imported here, so training does not pull in the web stack.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


# Bytes per pixel of each mode Pillow decodes into.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I": 4, "F": 4, "RGB": 3, "RGBA": 4}
# Bytes per pixel of the full-size copies `to_rgb` makes on the way to RGB (before the resize).
_CONVERT_BYTES = {"RGB": 0, "RGBA": 4 + 4 + 3, "LA": 4 + 4 + 4 + 3, "La": 4 + 4 + 4 + 3, "PA": 4 + 4 + 4 + 3}
_HIGH_DEPTH = ("I", "F")  # mode prefixes: I, I;16, I;16B, I;16L, I;16N, F
_EXIF_ORIENTATION = 0x0112


def mode_bytes(mode: str) -> int:
    """Bytes per pixel of a decoded image of `mode` (Pillow's own storage)."""
    if mode.startswith("I;16"):
        return 2
    return _MODE_BYTES.get(mode, 4)


def _is_high_depth(mode: str) -> bool:
    return mode.startswith(_HIGH_DEPTH)


def decode_cost(image: Image.Image) -> int:
    """Peak bytes of turning an opened (not yet loaded) image into the model input, estimated from its
    header: the decoded frame in its own mode (after JPEG draft scaling), the full-size copies the
    conversion to RGB makes, and a progressive JPEG's coefficient buffer, which libjpeg holds at full
    size whatever the draft scale. High-bit-depth and float images are resized in their own mode before
    anything else, so they cost their decoded frame and nothing more.
    """
    width, height = image.size
    mode = image.mode
    per_pixel = mode_bytes(mode)
    if not _is_high_depth(mode):
        converted = mode
        if mode == "P":
            converted = "PA" if "transparency" in image.info else "P"
        per_pixel += _CONVERT_BYTES.get(converted, 3)
        if _orientation(image) not in (None, 1):
            per_pixel += mode_bytes(mode)  # exif_transpose copies the frame
    cost = width * height * per_pixel
    if image.format == "JPEG" and (image.info.get("progressive") or image.info.get("progression")):
        full_w, full_h = getattr(image, "_catdog_full_size", image.size)
        layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * 3
        max_h = max(layer[1] for layer in layers)
        max_v = max(layer[2] for layer in layers)
        samples = sum(layer[1] * layer[2] for layer in layers) / (max_h * max_v)
        cost += int(full_w * full_h * samples * 2)  # 16-bit DCT coefficients per sample
    return cost


def _orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:
        return None
    return value if isinstance(value, int) else None


def probe_image(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open `data` and read its header only: format allow-list, size, pixel limit; nothing is decoded.

    `draft_size` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while it decodes, never below
    that size: a 48-megapixel photo destined for a 224x224 input is decoded at 1/8 scale. The pixel
    limit applies to what will actually be decoded, so such a photo passes while a PNG, TIFF or GIF
    of the same size (which has no cheap reduced decode) is refused here.
    """
    if not data:
        raise EmptyImageError("the uploaded image is empty (0 bytes)")
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
    if draft_size is not None and image.format == "JPEG":
        image._catdog_full_size = image.size  # type: ignore[attr-defined]
        try:
            image.draft(image.mode, draft_size)
        except (OSError, ValueError) as exc:
            raise UndecodableImageError(f"the image header is corrupt: {exc}") from exc
        width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(width, height, max_pixels)
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
    """Rotate/flip as the camera's EXIF orientation tag says, so a portrait photo stands upright."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # A malformed EXIF block must not make a good picture unreadable; use the pixels as stored.
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_depth_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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
