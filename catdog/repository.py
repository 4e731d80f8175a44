"""The model repository's layout, shared by training (which writes versions) and serving (which reads them).

    <repository>/<model name>/<version>/     one export: saved_model.pb, metadata.json, derived/, report/
    <repository>/<model name>/serving.json   optional: which versions serve (app/repository_config.py)

Versions are positive integers, as in TensorFlow Serving and Triton. Anything else in the model folder
is not a version: `serving.json`, and the `.staging-*` folders a version is written into before it is
renamed into place, so a reader never sees half an export.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from catdog.saved_model import model_exists

# The one model this service serves, by the name clients address it with (/v2/models/catdog/infer,
# /v1/models/catdog:predict) and the folder it has in a repository.
MODEL_NAME = "catdog"
SERVING_CONFIG_FILE = "serving.json"
STAGING_PREFIX = ".staging-"
_VERSION_NAME = re.compile(r"[1-9][0-9]{0,17}")  # no sign, no leading zero: one spelling per number


def version_of(name: str) -> int | None:
    """The version a folder name stands for, or None when it is not a version folder."""
    return int(name) if _VERSION_NAME.fullmatch(name) else None


def version_folders(model_root: Path) -> dict[int, Path]:
    """Every version folder under `model_root`, complete or not, by version number."""
    if not model_root.is_dir():
        return {}
    found = {}
    for entry in model_root.iterdir():
        version = version_of(entry.name)
        if version is not None and entry.is_dir():
            found[version] = entry
    return dict(sorted(found.items()))


def complete_versions(model_root: Path) -> dict[int, Path]:
    """The version folders that hold an export (saved_model.pb and metadata.json)."""
    return {version: path for version, path in version_folders(model_root).items() if model_exists(path)}


def next_version(model_root: Path) -> int:
    """One above the highest version folder, complete or not: never a number whose folder is there."""
    return max(version_folders(model_root), default=0) + 1


def staging_folder(model_root: Path, version: int) -> Path:
    """Where version `version` is written before `publish` renames it into place: a folder named like the
    version (an export records its folder's name) inside a hidden one a poller skips."""
    return model_root / f"{STAGING_PREFIX}{os.getpid()}" / str(version)


def publish(staging: Path, model_root: Path, version: int) -> Path:
    """Rename a finished export into `<model_root>/<version>`: one rename, so a poller sees all of it or none.

    FileExistsError when that version appeared meanwhile (another writer): the staging folder is kept.
    """
    final = model_root / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; the new export stays in {staging}")
    os.rename(staging, final)
    staging.parent.rmdir()
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging.parent, ignore_errors=True)
