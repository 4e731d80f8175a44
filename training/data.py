"""Find the cat/dog photos in a data directory and decode them through the serving pipeline.

Supported layouts (class names are always ``cat``/``dog``, folder names ``cats``/``cat``/``dogs``/
``dog``, case-insensitive):

- ``class-folders``: ``DIR/train/{cats,dogs}/`` and ``DIR/validation/{cats,dogs}/`` (or ``val/``);
- ``kaggle-flat``: files named ``cat.123.jpg`` / ``dog.45.jpg`` directly in ``DIR`` or ``DIR/train``
  (a flat ``DIR/validation`` is used when present);
- class folders without a train/validation split (``DIR/{cats,dogs}`` or only ``DIR/train/...``).

Whenever no validation split exists and a ``train`` or ``validation`` split is asked for, one is
drawn per class (stratified) with a seeded shuffle, so the same seed always holds out the same
files. The ``all`` split is every usable file of the dataset, whatever its layout, and draws
nothing: it is what `training evaluate` scores on data that has no validation split. Every photo goes through
`catdog.imaging.load_model_input`, the function the service uses, so training and serving cannot
disagree about decoding, orientation, colour conversion or resizing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catdog.contract import CLASS_NAMES
from catdog.imaging import ImageDecodeError, load_model_input
from training.errors import DatasetError

logger = logging.getLogger("catdog.training.data")

# CLASS_NAMES (label order) comes from catdog.contract; it stays importable from here for train.py.
__all__ = [
    "ALL",
    "CLASS_NAMES",
    "SPLITS",
    "SPLIT_CHOICES",
    "DatasetFiles",
    "LabeledFile",
    "LoadedDataset",
    "SkippedFile",
    "SplitData",
    "data_hash",
    "discover",
    "limit_per_class",
    "load_dataset",
    "load_split",
    "split_files",
]

SPLITS: tuple[str, ...] = ("train", "validation")
# Every file of the dataset: train/ and validation/ together, or all of a dataset without a split.
ALL = "all"
SPLIT_CHOICES: tuple[str, ...] = (*SPLITS, ALL)
# Folder names accepted for each class, in order of preference.
CLASS_FOLDERS: dict[str, tuple[str, ...]] = {"cat": ("cats", "cat"), "dog": ("dogs", "dog")}
VALIDATION_FOLDERS: tuple[str, ...] = ("validation", "val", "valid")
# Extensions of the formats catdog.imaging accepts; anything else (.txt, .DS_Store, Thumbs.db) is
# skipped before it is even read.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
)
# Far above any real photo, low enough to refuse a decompression bomb hiding in a dataset.
MAX_PIXELS = 50_000_000
# Kaggle "Dogs vs. Cats": cat.0.jpg, dog.12499.jpg (also cat_1.jpg, Cat-2.png).
_FLAT_NAME = re.compile(r"^(cat|dog)[._-]", re.IGNORECASE)

EXPECTED_LAYOUTS = (
    "expected DIR/train/{cats,dogs}/ + DIR/validation/{cats,dogs}/ class folders, "
    "DIR/{cats,dogs}/ class folders, or Kaggle-style files named cat.<n>.jpg / dog.<n>.jpg "
    "in DIR or DIR/train"
)


@dataclass(frozen=True)
class LabeledFile:
    path: Path
    label: int  # index into CLASS_NAMES


@dataclass(frozen=True)
class SkippedFile:
    path: str  # relative to the data directory
    reason: str


@dataclass
class DatasetFiles:
    """The result of discovery: which file belongs to which split and class (nothing decoded yet)."""

    root: Path
    layout: str
    # "folder", "split(fraction=..., seed=...)" when one was drawn, or "none (...)" when the data
    # has no validation split and only `all` was asked for.
    validation_source: str
    files: dict[str, list[LabeledFile]]  # the splits asked for, by name
    skipped: dict[str, list[SkippedFile]] = field(default_factory=dict)
    # False when the data has no validation split of its own (class folders only, Kaggle flat files
    # or an empty validation folder): "validation" is then a seeded held-out fraction of the files.
    has_validation_split: bool = True


@dataclass
class SplitData:
    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int32 [N], 0 = cat, 1 = dog
    paths: list[str]  # relative to the data directory, same order as images

    def class_counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.labels == index)) for index, name in enumerate(CLASS_NAMES)}


@dataclass
class LoadedDataset:
    root: Path
    layout: str
    validation_source: str
    image_size: int
    splits: dict[str, SplitData]
    skipped: dict[str, list[SkippedFile]]
    data_hash: str
    has_validation_split: bool = True  # see DatasetFiles

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: split.class_counts() for name, split in self.splits.items()}

    def skipped_counts(self) -> dict[str, int]:
        return {name: len(files) for name, files in self.skipped.items()}

    def skipped_json(self) -> dict[str, list[dict[str, str]]]:
        return {
            name: [{"path": item.path, "reason": item.reason} for item in files]
            for name, files in self.skipped.items()
        }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _child_dir(parent: Path, names: Sequence[str]) -> Path | None:
    """The first subdirectory of `parent` whose name matches one of `names` (case-insensitive)."""
    if not parent.is_dir():
        return None
    children = {child.name.lower(): child for child in sorted(parent.iterdir()) if child.is_dir()}
    for name in names:
        if name in children:
            return children[name]
    return None


def _class_dirs(parent: Path) -> dict[int, Path] | None:
    """{label: folder} when `parent` holds a folder for every class, else None."""
    found = {}
    for label, name in enumerate(CLASS_NAMES):
        folder = _child_dir(parent, CLASS_FOLDERS[name])
        if folder is None:
            return None
        found[label] = folder
    return found


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _scan_class_dirs(class_dirs: dict[int, Path], root: Path) -> tuple[list[LabeledFile], list[SkippedFile]]:
    files: list[LabeledFile] = []
    skipped: list[SkippedFile] = []
    for label, folder in class_dirs.items():
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            if _is_hidden(path) or path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(SkippedFile(_relative(path, root), "not an image file extension"))
                continue
            files.append(LabeledFile(path, label))
    return files, skipped


def _scan_flat(folder: Path, root: Path) -> tuple[list[LabeledFile], list[SkippedFile]]:
    files: list[LabeledFile] = []
    skipped: list[SkippedFile] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        match = _FLAT_NAME.match(path.name)
        if _is_hidden(path) or path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append(SkippedFile(_relative(path, root), "not an image file extension"))
        elif match is None:
            skipped.append(SkippedFile(_relative(path, root), "file name does not start with cat. or dog."))
        else:
            files.append(LabeledFile(path, CLASS_NAMES.index(match.group(1).lower())))
    return files, skipped


def _is_flat(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and _FLAT_NAME.match(p.name) for p in folder.iterdir())


def _scan(folder: Path, root: Path) -> tuple[list[LabeledFile], list[SkippedFile], str] | None:
    """Files of one split stored either as class folders or flat; None when neither."""
    class_dirs = _class_dirs(folder)
    if class_dirs is not None:
        files, skipped = _scan_class_dirs(class_dirs, root)
        return files, skipped, "class-folders"
    if _is_flat(folder):
        files, skipped = _scan_flat(folder, root)
        return files, skipped, "kaggle-flat"
    return None


def split_files(
    files: Sequence[LabeledFile], val_fraction: float, seed: int, root: Path
) -> tuple[list[LabeledFile], list[LabeledFile]]:
    """Stratified, seeded train/validation split that does not depend on directory listing order."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    train: list[LabeledFile] = []
    validation: list[LabeledFile] = []
    for label in range(len(CLASS_NAMES)):
        members = sorted((f for f in files if f.label == label), key=lambda f: _relative(f.path, root))
        order = rng.permutation(len(members))
        n_val = round(len(members) * val_fraction)
        if len(members) >= 2:
            # Keep at least one file of each class on both sides.
            n_val = min(max(n_val, 1), len(members) - 1)
        held_out = {int(i) for i in order[:n_val]}
        for index, item in enumerate(members):
            (validation if index in held_out else train).append(item)
    return train, validation


def discover(
    data_dir: Path | str,
    val_fraction: float = 0.2,
    seed: int = 42,
    *,
    splits: Sequence[str] = SPLITS,
) -> DatasetFiles:
    """Work out the layout of `data_dir` and list the files of each of `splits` (see module docstring).

    Every split asked for must hold both classes. A validation split is drawn only when the data
    has none and `train` or `validation` is asked for.
    """
    unknown = [split for split in splits if split not in SPLIT_CHOICES]
    if unknown:
        raise DatasetError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLIT_CHOICES)}")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetError(f"data directory {root} does not exist ({EXPECTED_LAYOUTS})")
    if not root.is_dir():
        raise DatasetError(f"data directory {root} is not a directory ({EXPECTED_LAYOUTS})")
    root = root.resolve()

    train_dir = _child_dir(root, ("train",))
    val_dir = _child_dir(root, VALIDATION_FOLDERS)
    train_scan = _scan(train_dir, root) if train_dir is not None else None
    if train_scan is None:
        train_scan = _scan(root, root)  # DIR itself holds the class folders or the flat files
        val_dir = None
    if train_scan is None:
        raise DatasetError(f"no cat/dog images found in {root}: {EXPECTED_LAYOUTS}")

    train_files, train_skipped, layout = train_scan
    val_scan = _scan(val_dir, root) if val_dir is not None else None
    has_validation_split = val_scan is not None and bool(val_scan[0])
    if val_scan is not None and has_validation_split:
        val_files, val_skipped, _ = val_scan
        validation_source = "folder"
        everything = train_files + val_files
    else:
        everything = train_files
        val_skipped = []
        if any(split in SPLITS for split in splits):
            if val_dir is not None:
                logger.warning(
                    "%s holds no usable images; drawing validation from the training files", val_dir
                )
            train_files, val_files = split_files(train_files, val_fraction, seed, root)
            validation_source = f"split(fraction={val_fraction}, seed={seed})"
        else:
            val_files = []
            validation_source = "none (no train/validation split in the data)"

    available = {"train": train_files, "validation": val_files, ALL: everything}
    files = {split: available[split] for split in splits}
    for split, members in files.items():
        for label, name in enumerate(CLASS_NAMES):
            if not any(f.label == label for f in members):
                raise DatasetError(
                    f"no {name} images for the {split} split in {root} (layout {layout}): {EXPECTED_LAYOUTS}"
                )
    all_skipped = {"train": train_skipped, "validation": val_skipped, ALL: train_skipped + val_skipped}
    return DatasetFiles(
        root=root,
        layout=layout,
        validation_source=validation_source,
        files=files,
        skipped={split: all_skipped[split] for split in splits},
        has_validation_split=has_validation_split,
    )


def limit_per_class(files: Sequence[LabeledFile], limit: int | None, root: Path) -> list[LabeledFile]:
    """The first `limit` files (sorted by relative path) of each class; all of them when None."""
    ordered = sorted(files, key=lambda f: (f.label, _relative(f.path, root)))
    if limit is None:
        return ordered
    if limit < 1:
        raise DatasetError(f"--limit-per-class must be at least 1, got {limit}")
    kept: list[LabeledFile] = []
    for label in range(len(CLASS_NAMES)):
        kept.extend([f for f in ordered if f.label == label][:limit])
    return kept


@dataclass(frozen=True)
class _Decoded:
    image: np.ndarray | None
    digest: str
    error: str | None


def _decode(path: Path, image_size: int) -> _Decoded:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _Decoded(None, "", f"unreadable: {exc.strerror or exc}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        return _Decoded(load_model_input(data, image_size, max_pixels=MAX_PIXELS), digest, None)
    except ImageDecodeError as exc:
        return _Decoded(None, digest, str(exc))
    except Exception as exc:  # a Pillow plugin bug on one odd file must not end a long run
        return _Decoded(None, digest, f"{type(exc).__name__}: {exc}")


def _progress_bar(total: int) -> Any:
    import keras

    # Interactive bar on a terminal; one summary line in logs (verbose=2).
    return keras.utils.Progbar(total, verbose=1 if sys.stdout.isatty() else 2, unit_name="image")


def load_split(
    files: Sequence[LabeledFile],
    root: Path,
    image_size: int,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[SplitData, list[SkippedFile], list[tuple[str, str]]]:
    """Decode `files` in a thread pool (Pillow releases the GIL while decoding).

    Returns the decoded split, the files that could not be decoded (with the reason) and the
    (relative path, sha256) pairs of the files used, for the data hash. Order follows `files`.
    """
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    images = np.zeros((len(files), image_size, image_size, 3), dtype=np.uint8)
    keep = np.zeros(len(files), dtype=bool)
    skipped: list[SkippedFile] = []
    digests: list[tuple[str, str]] = []
    bar = _progress_bar(len(files)) if progress and files else None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # map() yields in input order, so the arrays do not depend on thread scheduling.
        for index, (item, result) in enumerate(
            zip(files, pool.map(lambda f: _decode(f.path, image_size), files), strict=True)
        ):
            relative = _relative(item.path, root)
            if result.image is None:
                skipped.append(SkippedFile(relative, result.error or "unknown error"))
            else:
                images[index] = result.image
                keep[index] = True
                digests.append((relative, result.digest))
            if bar is not None:
                bar.update(index + 1)
    labels = np.array([f.label for f in files], dtype=np.int32)
    paths = [_relative(f.path, root) for f, k in zip(files, keep, strict=True) if k]
    return SplitData(images[keep], labels[keep], paths), skipped, digests


def data_hash(pairs: Sequence[tuple[str, str]]) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs: names the exact training data."""
    digest = hashlib.sha256()
    for relative, file_digest in sorted(pairs):
        digest.update(f"{relative}\0{file_digest}\n".encode())
    return digest.hexdigest()


def load_dataset(
    data_dir: Path | str,
    image_size: int,
    *,
    val_fraction: float = 0.2,
    seed: int = 42,
    limit: int | None = None,
    splits: Sequence[str] = SPLITS,
    progress: bool = True,
    found: DatasetFiles | None = None,
) -> LoadedDataset:
    """Discover, limit and decode the requested splits; undecodable files are skipped and listed.

    `splits` are names from SPLIT_CHOICES: `train`, `validation` (drawn from the files, seeded,
    when the data has no validation split) and `all` (every file, nothing drawn).
    """
    if found is None:  # callers that already checked the data hand over what discover() found
        found = discover(data_dir, val_fraction=val_fraction, seed=seed, splits=splits)
    loaded: dict[str, SplitData] = {}
    skipped: dict[str, list[SkippedFile]] = {}
    pairs: list[tuple[str, str]] = []
    for split in splits:
        chosen = limit_per_class(found.files[split], limit, found.root)
        logger.info("decoding %d images (%s split) from %s", len(chosen), split, found.root)
        data, bad, digests = load_split(chosen, found.root, image_size, progress=progress)
        skipped[split] = found.skipped.get(split, []) + bad
        for item in skipped[split]:
            logger.warning("skipped %s (%s): %s", item.path, split, item.reason)
        if len(data.labels) == 0:
            raise DatasetError(f"none of the {split} images in {found.root} could be decoded")
        loaded[split] = data
        pairs.extend(digests)
    return LoadedDataset(
        root=found.root,
        layout=found.layout,
        validation_source=found.validation_source,
        image_size=image_size,
        splits=loaded,
        skipped=skipped,
        data_hash=data_hash(pairs),
        has_validation_split=found.has_validation_split,
    )
