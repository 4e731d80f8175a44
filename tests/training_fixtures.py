"""Tiny synthetic cat/dog datasets for the training tests.

Cats are mostly red, dogs mostly blue (plus noise): trivially separable, so a model that does not
learn them is broken, and small enough (a few dozen 16-48 px JPEGs) to train on in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CHANNEL = {"cat": 0, "dog": 2}


def synthetic_image(label: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    pixels = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
    pixels[..., CHANNEL[label]] = rng.integers(160, 256, (size, size)).astype(np.uint8)
    return Image.fromarray(pixels)


def write_images(folder: Path, label: str, count: int, rng: np.random.Generator) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        size = int(rng.integers(16, 49))  # varied sizes: the loader must squash them all
        path = folder / f"{label}.{index}.jpg"
        synthetic_image(label, rng, size).save(path, quality=95)
        paths.append(path)
    return paths


def add_junk(folder: Path, prefix: str = "") -> None:
    """A corrupt .jpg, an empty .jpg and a .txt: three files the loader must skip and count."""
    (folder / f"{prefix}corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    (folder / f"{prefix}empty.jpg").write_bytes(b"")
    (folder / f"{prefix}notes.txt").write_text("not an image\n")


def make_class_folders(
    root: Path,
    train_per_class: int = 12,
    val_per_class: int = 8,
    *,
    seed: int = 0,
    val_name: str = "validation",
    folder_names: tuple[str, str] = ("cats", "dogs"),
    junk: bool = True,
) -> Path:
    """Layout A: root/train/{cats,dogs} + root/validation/{cats,dogs}."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), (val_name, val_per_class)):
        for label, folder in zip(("cat", "dog"), folder_names, strict=True):
            write_images(root / split / folder, label, count, rng)
    if junk:
        add_junk(root / "train" / folder_names[0])
    return root


def make_flat(root: Path, per_class: int = 15, *, seed: int = 0, junk: bool = True) -> Path:
    """Layout B (Kaggle): cat.<n>.jpg / dog.<n>.jpg all in one folder."""
    rng = np.random.default_rng(seed)
    for label in ("cat", "dog"):
        write_images(root, label, per_class, rng)
    if junk:
        add_junk(root, prefix="cat.")  # named like data, so only decoding can reject them
    return root
