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


def open_image(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open and fully decode the first frame of `data`, checking the pixel budget before decoding.

    `draft_size` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while it decodes, never below
    that size: a 24-megapixel photo destined for a 160x160 input then costs a fraction of the work.
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
    except (OSError, ValueError, SyntaxError) as exc:
        raise UndecodableImageError(f"the image header is corrupt: {exc}") from exc

    width, height = image.size
    if width <= 0 or height <= 0:
        raise UndecodableImageError(f"the image has an invalid size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(width, height, max_pixels)

    if draft_size is not None and image.format == "JPEG":
        image.draft(image.mode, draft_size)
    try:
        # Image.open leaves an animation on its first frame; load() decodes that frame only.
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise UndecodableImageError(f"the image data is corrupt or truncated: {exc}") from exc
    return image


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


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Map 16/32-bit integer or float grayscale to 8 bits by its nominal range, not by clipping."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        pixels = pixels / 257.0
    elif image.mode == "F":
        # Float images are conventionally 0..1; anything larger is treated as 0..255.
        pixels = pixels * 255.0 if pixels.size and float(pixels.max()) <= 1.0 else pixels
    elif pixels.size and float(pixels.max()) > 255.0:
        pixels = pixels / 257.0  # 32-bit "I" holding 16-bit data, as Pillow opens 16-bit PNGs
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")


def load_model_input(data: bytes, image_size: int, max_pixels: int) -> np.ndarray:
    """Decode `data` into a (image_size, image_size, 3) uint8 array: the model's input.

    The whole picture is squashed to a square (no crop), matching how the model was trained.
    """
    target = (image_size, image_size)
    image = open_image(data, max_pixels=max_pixels, draft_size=target)
    image = to_rgb(apply_exif_orientation(image))
    if image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
