"""Bounds on the work an image file's container structure can cause before a pixel is decoded.

Pillow parses container structure in Python, one segment, chunk or byte at a time, and some of it is
worse than linear: its JPEG plugin joins every Exif APP1 segment with `bytes +=` (10 MB of tiny
segments: minutes of CPU). These walkers read the same structure with cheap reads and stop at the
first bound passed, before Pillow sees the file (catdog/imaging.py calls them and turns
StructureBoundError into ImageTooComplexError, a 400). Legitimate files sit far below each bound;
tests/service/test_hostile_inputs.py builds a file just over each one.
"""

from __future__ import annotations

import re
import struct

# Marker segments before the first scan. Cameras and editors write fewer than 30 (APPn, DQT, DHT,
# SOF, DRI); even metadata split into 64 KiB segments needs at most 160 of them in a 10 MiB upload,
# so 256 refuses only files made of many tiny segments (~2.5 us of Pillow's Python each).
JPEG_MAX_SEGMENTS = 256
# Exif APP1 segments: the Exif standard fits Exif in one; Pillow concatenates every one it finds
# (quadratic) and parses the result when it opens the file. 4 bounds that IFD to 256 KiB.
JPEG_MAX_EXIF_SEGMENTS = 4
# Bytes of APPn and COM payloads (Pillow copies them and parses some, Photoshop resources one by
# one in Python: ~45 ms per MB). 8 MiB keeps room for the largest real metadata we know of (a phone's
# depth map or ICC profile in extended XMP / APP2, a few MB).
JPEG_MAX_METADATA_BYTES = 8 * 1024 * 1024
# Fill bytes (0xFF runs) and stray bytes between segments, which Pillow steps over one at a time.
JPEG_MAX_SKIPPED_BYTES = 64 * 1024
# Scans: a progressive JPEG has 6 to ~12 (libjpeg's default script: 10; mozjpeg a few more), but a
# file of thousands of tiny scans makes libjpeg walk the whole coefficient buffer once per scan
# (a refinement scan: ~0.6 ns per pixel; 174,000 scans of a 36 MP image: minutes). The count is
# bounded, and so is its product with the image's full-size pixels: ~0.6 s of CPU at worst, while a
# 48 MP photo may still have 20 scans.
JPEG_MAX_SCANS = 256
JPEG_MAX_SCAN_PIXELS = 1_000_000_000
# PNG chunks Pillow reads (to IEND, or to the second frame of an APNG): one per encoder buffer,
# usually 8 to 64 KiB, so a 10 MiB file has a few thousand at most. ~2.5 us each in Python.
PNG_MAX_CHUNKS = 65_536
# Compressed metadata chunks (iCCP, zTXt, iTXt): Pillow inflates each up to 1 MiB, and only text
# counts towards its own MAX_TEXT_MEMORY; 10 MB of 1 KB iCCP bombs inflate for minutes.
PNG_MAX_COMPRESSED_CHUNKS = 32
# GIF extension sub-blocks and stray bytes before the first image, read one by one by Pillow. XMP in
# a GIF is the largest legitimate user: a few hundred to a few thousand sub-blocks.
GIF_MAX_BLOCKS = 65_536
# Entries of a TIFF-structured directory Pillow parses in Python, ~7 us each: a TIFF file's first
# IFD, and the Exif IFD0 of any format (JPEG APP1, PNG eXIf, WebP EXIF). Real ones have tens; DNGs
# a few hundred.
IFD_MAX_ENTRIES = 4096
# Strips or tiles of a TIFF: Pillow builds one Python tile per strip (~6 us each, opening and
# decoding). One row per strip at 40 MP stays under this for any sane aspect ratio.
TIFF_MAX_STRIPS = 65_536
# RLE BMPs are decoded by Pillow in Python, byte pair by byte pair and, for RLE4 runs and end-of-line
# padding, pixel by pixel (~125 ns a pixel): bounded in pixels and in compressed bytes.
BMP_RLE_MAX_PIXELS = 2_000_000
BMP_RLE_MAX_BYTES = 1024 * 1024

_JPEG_STANDALONE = frozenset({0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})  # no length field
_GIF_BLOCK_START = re.compile(rb"[!,;]")
_TIFF_PREFIXES = (b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b", b"II\x2b\x00")


class StructureBoundError(ValueError):
    """A file over one of the bounds above; `limit` is the bound that was passed."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


def _too_complex(fmt: str, what: str, limit: int) -> StructureBoundError:
    return StructureBoundError(
        f"the {fmt} file has more than {limit} {what}; files like that are refused, parsing them "
        f"would take seconds of CPU",
        limit,
    )


def check_structure(data: bytes) -> int | None:
    """Refuse (StructureBoundError) a file whose container structure is over one of the bounds above.

    Runs before Pillow parses the file, on the same bytes Pillow would walk, with reads that cost
    next to nothing per element, and stops at the first bound passed; a file this does not recognise,
    or that is malformed, is left for Pillow to refuse. Returns where a JPEG's first scan starts, for
    `check_scans` once the image's size has passed the pixel limit; None for other formats."""
    if data.startswith(b"\xff\xd8\xff"):
        return _check_jpeg(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        _check_png(data)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        _check_gif(data)
    elif data.startswith(_TIFF_PREFIXES):
        _check_tiff(data)
    elif data.startswith(b"BM"):
        _check_bmp(data)
    return None


def check_scans(data: bytes, first_scan: int, pixels: int) -> None:
    """Refuse a JPEG with more scans than its size allows (StructureBoundError): `pixels` is its full
    size, `first_scan` where `check_structure` found its first scan."""
    # Every scan starts with an SOS marker, and entropy-coded data never holds FF DA (an FF there is
    # followed by 00 or a restart marker): counting the pair counts the scans, at C speed. Anything
    # after the image (an MPO's other pictures, a trailer) can only add to the count.
    scans = data.count(b"\xff\xda", first_scan)
    allowed = max(1, min(JPEG_MAX_SCANS, JPEG_MAX_SCAN_PIXELS // max(1, pixels)))
    if scans > allowed:
        raise StructureBoundError(
            f"the JPEG file has {scans} scans, over the limit of {allowed} for an image of {pixels} "
            f"pixels (at most {JPEG_MAX_SCANS} scans and {JPEG_MAX_SCAN_PIXELS} pixels decoded across "
            f"all scans); files like that are refused, decoding them would take seconds of CPU",
            allowed,
        )


def _check_jpeg(data: bytes) -> int | None:
    """Walk the marker segments as Pillow's JPEG plugin does, up to the first scan (where it stops):
    that scan's offset, None if there is none."""
    size = len(data)
    pos = 3  # Pillow has read FF D8 FF: the next byte completes the first marker after SOI
    segments = exif_segments = metadata = skipped = 0
    exif: list[bytes] = []
    sos = -1
    while pos < size:
        code = data[pos]
        pos += 1
        if code == 0xFF:  # a fill byte: the next one completes the marker
            skipped += 1
            if skipped > JPEG_MAX_SKIPPED_BYTES:
                raise _too_complex("JPEG", "fill or stray bytes between segments", JPEG_MAX_SKIPPED_BYTES)
            continue
        if code != 0x00:
            if code < 0xC0:
                break  # not a marker: Pillow refuses the file itself
            segments += 1
            if segments > JPEG_MAX_SEGMENTS:
                raise _too_complex("JPEG", "marker segments before its first scan", JPEG_MAX_SEGMENTS)
            if code not in _JPEG_STANDALONE:
                if pos + 2 > size:
                    break
                body = pos + 2
                end = min(size, body + max(0, ((data[pos] << 8) | data[pos + 1]) - 2))
                if code == 0xDA:
                    sos = pos - 2
                    break
                if code >= 0xE0:  # APPn and COM (0xFE); JPGn (0xF0-0xFD) have no length
                    metadata += end - body
                    if metadata > JPEG_MAX_METADATA_BYTES:
                        raise _too_complex("JPEG", "bytes of metadata", JPEG_MAX_METADATA_BYTES)
                    if code == 0xE1 and data.startswith(b"Exif\x00\x00", body):
                        exif_segments += 1
                        if exif_segments > JPEG_MAX_EXIF_SEGMENTS:
                            raise _too_complex("JPEG", "Exif segments", JPEG_MAX_EXIF_SEGMENTS)
                        exif.append(data[body + 6 : end])
                pos = end
        else:
            skipped += 1  # FF 00 outside a scan: Pillow reads on
        # Pillow reads the next byte and steps over anything up to the next 0xFF, one byte at a time.
        if pos < size and data[pos] != 0xFF:
            found = data.find(b"\xff", pos)
            skipped += (size if found < 0 else found) - pos
            if skipped > JPEG_MAX_SKIPPED_BYTES:
                raise _too_complex("JPEG", "fill or stray bytes between segments", JPEG_MAX_SKIPPED_BYTES)
            if found < 0:
                break
            pos = found
        pos += 1
    if exif:
        check_ifd(b"".join(exif), "JPEG")  # Pillow parses the joined Exif as it opens the file
    return sos if sos >= 0 else None


def _check_png(data: bytes) -> None:
    """Walk the chunks Pillow reads: to IEND, or for an APNG to the control chunk of its next frame."""
    size = len(data)
    pos = 8
    chunks = compressed = 0
    animated = pixels_seen = False
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > PNG_MAX_CHUNKS:
            raise _too_complex("PNG", "chunks", PNG_MAX_CHUNKS)
        if kind == b"IEND":
            return
        if kind == b"acTL":
            animated = True
        elif kind in (b"IDAT", b"fdAT"):
            pixels_seen = True
        elif kind == b"fcTL" and animated and pixels_seen:
            return  # Pillow decodes the first frame only and stops reading here
        elif kind in (b"iCCP", b"zTXt", b"iTXt"):
            compressed += 1
            if compressed > PNG_MAX_COMPRESSED_CHUNKS:
                raise _too_complex(
                    "PNG", "compressed metadata chunks (iCCP, zTXt, iTXt)", PNG_MAX_COMPRESSED_CHUNKS
                )
        elif kind == b"eXIf":
            check_ifd(data[pos + 8 : pos + 8 + length], "PNG")
        pos += 12 + length


def _check_gif(data: bytes) -> None:
    """Walk the blocks before the first image descriptor: the part Pillow parses when it opens a GIF."""
    size = len(data)
    if size < 13:
        return
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen descriptor, palette
    blocks = 0
    while pos < size:
        introducer = data[pos]
        if introducer in (0x2C, 0x3B):  # the first image, or the trailer
            return
        if introducer == 0x21:  # extension: a label, then sub-blocks up to an empty one
            pos += 2
            while pos < size:
                length = data[pos]
                pos += 1 + length
                blocks += 1
                if blocks > GIF_MAX_BLOCKS:
                    raise _too_complex(
                        "GIF", "extension blocks or stray bytes before its first image", GIF_MAX_BLOCKS
                    )
                if length == 0:
                    break
        else:  # stray bytes, which Pillow reads one at a time
            found = _GIF_BLOCK_START.search(data, pos)
            end = size if found is None else found.start()
            blocks += end - pos
            if blocks > GIF_MAX_BLOCKS:
                raise _too_complex(
                    "GIF", "extension blocks or stray bytes before its first image", GIF_MAX_BLOCKS
                )
            pos = end


def _check_tiff(data: bytes) -> None:
    """The first IFD, which Pillow parses on opening: its entry count, and its strip or tile count."""
    endian = "<" if data[:2] == b"II" else ">"
    big = data[2] == 0x2B  # BigTIFF, as Pillow decides it
    try:
        (offset,) = struct.unpack_from(endian + ("Q" if big else "I"), data, 8 if big else 4)
        (entries,) = struct.unpack_from(endian + ("Q" if big else "H"), data, offset)
    except struct.error:
        return
    if entries > IFD_MAX_ENTRIES:
        raise _too_complex("TIFF", "entries in its first image directory", IFD_MAX_ENTRIES)
    entry, first = (20, offset + 8) if big else (12, offset + 2)
    layout = endian + ("HHQ" if big else "HHI")
    for index in range(entries):
        try:
            tag, _, count = struct.unpack_from(layout, data, first + index * entry)
        except struct.error:
            return
        if tag in (273, 324) and count > TIFF_MAX_STRIPS:  # StripOffsets, TileOffsets
            raise _too_complex("TIFF", "strips or tiles", TIFF_MAX_STRIPS)


def _check_bmp(data: bytes) -> None:
    """RLE8 and RLE4 BMPs, which Pillow decodes in Python: their pixels and compressed bytes."""
    try:
        (offset,) = struct.unpack_from("<I", data, 10)
        header, width, height, _, _, compression = struct.unpack_from("<IiiHHI", data, 14)
    except struct.error:
        return
    if header < 40 or compression not in (1, 2):
        return
    if abs(width * height) > BMP_RLE_MAX_PIXELS:
        raise _too_complex("BMP", "pixels for run-length encoding (RLE)", BMP_RLE_MAX_PIXELS)
    if len(data) - offset > BMP_RLE_MAX_BYTES:
        raise _too_complex("BMP", "bytes of run-length encoded (RLE) data", BMP_RLE_MAX_BYTES)


def check_ifd(blob: bytes, fmt: str) -> None:
    """The entry count of an Exif block's IFD0 (TIFF-structured), which Pillow parses in Python."""
    while blob.startswith(b"Exif\x00\x00"):
        blob = blob[6:]
    endian = "<" if blob[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(endian + "I", blob, 4)
        (entries,) = struct.unpack_from(endian + "H", blob, offset)
    except struct.error:
        return
    if entries > IFD_MAX_ENTRIES:
        raise _too_complex(fmt, "entries in its Exif directory", IFD_MAX_ENTRIES)


def webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its first chunk header, as Pillow reads it before decoding anything."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None
