"""Decode memory: the real peak of turning each accepted format into the model input, against the
estimate the decode budget admits it by (`catdog.imaging.decode_cost`).

    .venv/bin/python -m benchmarks.decode_memory [--megapixels 20] [--only webp,bmp]

For every format and mode variant the service accepts, a test image of about `--megapixels` is
written to a temporary file, then a fresh Python process imports the pipeline, warms the plugin up on
a tiny image of the same format, resets its peak-RSS mark (/proc/self/clear_refs; `ru_maxrss` where
that is not allowed) and runs `load_model_input(data, image_size=336, max_pixels=40_000_000)`: the
peak RSS over the baseline is what decoding that image really took. Each figure is per pixel of the
image as stored (before JPEG draft scaling), next to `decode_cost`'s estimate per pixel; the budget
holds only if every ratio (estimate / measured) is at least 1.

RLE-compressed BMPs are built at `catdog.image_structure.BMP_RLE_MAX_PIXELS`: Pillow decodes them in Python
and larger ones are refused.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SIZE = 336
MAX_PIXELS = 40_000_000


def _gradient(width: int, height: int) -> np.ndarray:
    """A smooth RGB picture with a little texture: cheap to build and to compress at 20 MP."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = x
    rgb[..., 1] = y
    rgb[..., 2] = (x + y) / 2 + (np.arange(width)[None, :] % 7) * 3
    return rgb


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def bmp_rle(width: int, height: int, bits: int) -> bytes:
    """An RLE8 or RLE4 BMP (Pillow writes neither): runs of 255 pixels in changing colours, each row
    ended by an end-of-line code, the image by end-of-bitmap."""
    colors = 1 << bits
    palette = b"".join(
        bytes((i * 255 // (colors - 1), 128, 255 - i * 255 // (colors - 1), 0)) for i in range(colors)
    )
    rows = []
    for row in range(height):
        runs, left, index = [], width, row
        while left:
            count = min(255, left)
            value = index % colors if bits == 8 else (index % 16) * 17  # RLE4: two 4-bit pixels
            runs.append(bytes((count, value)))
            left -= count
            index += 1
        rows.append(b"".join(runs) + b"\x00\x00")
    body = b"".join(rows) + b"\x00\x01"
    compression = 1 if bits == 8 else 2
    header = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, bits, compression, len(body), 2835, 2835, colors, 0
    )
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + header + palette + body


def variants(megapixels: float) -> dict[str, Callable[[], bytes]]:
    """Name -> builder of the test image, for every format and mode variant the service accepts."""
    height = int((megapixels * 1e6 * 2 / 3) ** 0.5)
    width = int(megapixels * 1e6 / height)
    size = (width, height)

    def rgb() -> Image.Image:
        return Image.fromarray(_gradient(*size), "RGB")

    def rgba() -> Image.Image:
        image = rgb().convert("RGBA")
        image.putalpha(Image.linear_gradient("L").resize(size))
        return image

    def palette(transparency: bool) -> Callable[[], bytes]:
        def build() -> bytes:
            image = rgb().quantize(64, method=Image.Quantize.FASTOCTREE)
            return _encode(image, "PNG", transparency=0) if transparency else _encode(image, "PNG")

        return build

    def sixteen_bit() -> Image.Image:
        return Image.fromarray(_gradient(*size)[..., 0].astype(np.uint16) * 257)  # mode I;16

    def animated_webp() -> bytes:
        first = rgb()
        second = first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _encode(first, "WEBP", save_all=True, append_images=[second], quality=50, method=0)

    def rotated() -> Image.Exif:
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": a full-size transposed copy
        return exif

    def rle_size() -> tuple[int, int]:
        from catdog.image_structure import BMP_RLE_MAX_PIXELS

        rle_height = int((BMP_RLE_MAX_PIXELS * 2 / 3) ** 0.5)
        return BMP_RLE_MAX_PIXELS // rle_height, rle_height

    return {
        "JPEG baseline": lambda: _encode(rgb(), "JPEG", quality=85),
        "JPEG baseline 4:4:4": lambda: _encode(rgb(), "JPEG", quality=85, subsampling=0),
        "JPEG progressive": lambda: _encode(rgb(), "JPEG", quality=85, progressive=True),
        "JPEG progressive 4:4:4": lambda: _encode(rgb(), "JPEG", quality=85, progressive=True, subsampling=0),
        "JPEG rotated (EXIF 6)": lambda: _encode(rgb(), "JPEG", quality=85, exif=rotated()),
        "JPEG grayscale": lambda: _encode(rgb().convert("L"), "JPEG", quality=85),
        "JPEG CMYK": lambda: _encode(rgb().convert("CMYK"), "JPEG", quality=85),
        "PNG RGB": lambda: _encode(rgb(), "PNG", compress_level=1),
        "PNG rotated (eXIf 6)": lambda: _encode(rgb(), "PNG", compress_level=1, exif=rotated()),
        "PNG RGBA": lambda: _encode(rgba(), "PNG", compress_level=1),
        "PNG P": palette(transparency=False),
        "PNG P+transparency": palette(transparency=True),
        "PNG L": lambda: _encode(rgb().convert("L"), "PNG", compress_level=1),
        "PNG LA": lambda: _encode(rgba().convert("LA"), "PNG", compress_level=1),
        "PNG 16-bit": lambda: _encode(sixteen_bit(), "PNG", compress_level=1),
        "GIF": lambda: _encode(rgb().quantize(64, method=Image.Quantize.FASTOCTREE), "GIF"),
        "WEBP lossy": lambda: _encode(rgb(), "WEBP", quality=50, method=0),
        "WEBP lossless": lambda: _encode(rgb(), "WEBP", lossless=True, quality=0, method=0),
        "WEBP lossy+alpha": lambda: _encode(rgba(), "WEBP", quality=50, method=0),
        "WEBP animated": animated_webp,
        "BMP RGB": lambda: _encode(rgb(), "BMP"),
        "BMP P": lambda: _encode(rgb().quantize(64, method=Image.Quantize.FASTOCTREE), "BMP"),
        "BMP RLE8": lambda: bmp_rle(*rle_size(), bits=8),
        "BMP RLE4": lambda: bmp_rle(*rle_size(), bits=4),
        "TIFF RGB": lambda: _encode(rgb(), "TIFF"),
        "TIFF LZW": lambda: _encode(rgb(), "TIFF", compression="tiff_lzw"),
        "TIFF deflate": lambda: _encode(rgb(), "TIFF", compression="tiff_adobe_deflate"),
        "TIFF 16-bit": lambda: _encode(sixteen_bit(), "TIFF"),
        "TIFF rotated (EXIF 6)": lambda: _encode(rgb(), "TIFF", compression="tiff_lzw", exif=rotated()),
        "TIFF CMYK": lambda: _encode(rgb().convert("CMYK"), "TIFF", compression="tiff_lzw"),
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(path: Path) -> dict[str, float]:
    """In a fresh process: peak RSS over the baseline of decoding the image at `path`, and the estimate."""
    from catdog.imaging import decode_cost, load_model_input, probe_image

    data = path.read_bytes()
    probe = probe_image(data, MAX_PIXELS)
    width, height = probe.size
    fmt = probe.format
    probe.close()
    # Warm-up: plugin imports, codec tables and the resize path, on a tiny image of the same format.
    load_model_input(
        _encode(Image.new("RGB", (64, 48)), "PNG" if fmt is None else fmt), IMAGE_SIZE, MAX_PIXELS
    )
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak-RSS mark to the current RSS
        baseline = _status_kib("VmRSS") * 1024

        def peak() -> int:
            return _status_kib("VmHWM") * 1024

    except OSError:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        def peak() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    load_model_input(data, IMAGE_SIZE, MAX_PIXELS)
    measured = peak() - baseline
    estimate = decode_cost(probe_image(data, MAX_PIXELS, draft_size=(IMAGE_SIZE, IMAGE_SIZE)))
    return {"pixels": width * height, "measured": measured, "estimate": estimate, "bytes": len(data)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megapixels", type=float, default=20.0, help="size of each test image")
    parser.add_argument("--only", default="", help="comma-separated name prefixes to run (case-insensitive)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's entry point
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return

    prefixes = [p.strip().lower() for p in args.only.split(",") if p.strip()]
    print(f"{'variant':24} {'MP':>6} {'file KB':>9} {'measured B/px':>14} {'estimate B/px':>14} {'ratio':>6}")
    worst = float("inf")
    with tempfile.TemporaryDirectory() as folder:
        for name, build in variants(args.megapixels).items():
            if prefixes and not any(name.lower().startswith(p) for p in prefixes):
                continue
            path = Path(folder) / "image"
            path.write_bytes(build())
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            result = subprocess.run(
                [sys.executable, "-m", "benchmarks.decode_memory", "--measure", str(path)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if result.returncode != 0:
                print(f"{name:24} failed: {result.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            pixels = row["pixels"]
            measured, estimate = row["measured"] / pixels, row["estimate"] / pixels
            ratio = estimate / measured if measured > 0 else float("inf")
            worst = min(worst, ratio)
            print(
                f"{name:24} {pixels / 1e6:6.1f} {row['bytes'] / 1024:9.0f} {measured:14.2f} {estimate:14.2f} "
                f"{ratio:6.2f}{'  UNDER' if ratio < 1 else ''}",
                flush=True,
            )
            if args.json:
                print(json.dumps({"variant": name, **row}))
    print(f"lowest ratio (estimate / measured): {worst:.2f}")


if __name__ == "__main__":
    main()
