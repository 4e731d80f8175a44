"""Generated test images: every Pillow mode the service must accept, and broken or hostile files it
must refuse."""

from __future__ import annotations

import io
import struct
import zlib

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


# --- hostile structure: files whose parsing, not their pixels, is the attack -------------------------


def jpeg_segment(marker: int, body: bytes) -> bytes:
    """One JPEG marker segment: FF, the marker, a 2-byte length (itself included), the body."""
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def jpeg_with(segments: bytes, image: bytes | None = None) -> bytes:
    """A small JPEG with `segments` inserted right after its SOI marker."""
    image = image if image is not None else solid(BLUE, size=(16, 16), fmt="JPEG")
    return image[:2] + segments + image[2:]


def exif_segments_jpeg(total_bytes: int, payload: int = 8) -> bytes:
    """A small JPEG after as many tiny Exif APP1 segments as fit in `total_bytes`: Pillow joins them
    with `bytes +=`, so the work grows with the square of their number."""
    segment = jpeg_segment(0xE1, b"Exif\x00\x00" + b"\x00" * payload)
    return jpeg_with(segment * (total_bytes // len(segment)))


def progressive_jpeg_with_scans(scans: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A progressive grayscale JPEG whose last scan is repeated until it has `scans` scans (libjpeg
    warns about the repeated scan and decodes on)."""
    data = encode(Image.new("L", size, 90), "JPEG", progressive=True)
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    end = len(data) - 2  # EOI
    last = data[starts[-1] : end]
    return data[:end] + last * (scans - len(starts)) + data[end:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunks(chunks: bytes, after_pixels: bool = False) -> bytes:
    """A small PNG with `chunks` inserted before its first IDAT, or before IEND."""
    data = red_png()
    at = data.rfind(b"IEND") - 4 if after_pixels else data.find(b"IDAT") - 4
    return data[:at] + chunks + data[at:]


def gif_with_blocks(blocks: bytes) -> bytes:
    """A small GIF with `blocks` (extensions, stray bytes) between its header and its first image."""
    data = encode(Image.new("P", (16, 16), 1), "GIF")
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    return data[:at] + blocks + data[at:]


def tiff_with_strips(strips: int, width: int = 8) -> bytes:
    """An uncompressed 8-bit grayscale TIFF of `strips` one-row strips, every one pointing at the same
    row of pixels: tiny on the wire, one Python tile per strip in Pillow."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, strips),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
        (273, 4, strips, 0),  # StripOffsets (value offset filled in below)
        (278, 4, 1, 1),  # RowsPerStrip
        (279, 4, strips, 0),  # StripByteCounts (idem)
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    row_at = 8 + ifd_size
    offsets_at = row_at + width
    counts_at = offsets_at + 4 * strips
    values = {273: offsets_at, 279: counts_at}
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, values.get(tag, value)) for tag, kind, count, value in entries
    )
    pixels = b"\x80" * width
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + ifd
        + b"\x00\x00\x00\x00"
        + pixels
        + struct.pack("<I", row_at) * strips
        + struct.pack("<I", width) * strips
    )


def bmp_rle(width: int, height: int, bits: int = 8, body: bytes | None = None) -> bytes:
    """An RLE8 or RLE4 BMP (Pillow writes neither); by default runs of 255 pixels, row by row."""
    colors = 1 << bits
    palette = b"".join(
        bytes((i * 255 // (colors - 1), 64, 255 - i * 255 // (colors - 1), 0)) for i in range(colors)
    )
    if body is None:
        rows = []
        for row in range(height):
            runs, left = [], width
            while left:
                count = min(255, left)
                runs.append(bytes((count, (row + left) % colors if bits == 8 else 0x12)))
                left -= count
            rows.append(b"".join(runs) + b"\x00\x00")  # end of line
        body = b"".join(rows) + b"\x00\x01"  # end of bitmap
    compression = 1 if bits == 8 else 2
    header = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, bits, compression, len(body), 2835, 2835, colors, 0
    )
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + header + palette + body
