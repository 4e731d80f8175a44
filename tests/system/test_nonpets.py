"""The non-pet photo set: every listed photo fetched from its package, checked and described."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from training.nonpets import MANIFEST, NON_PETS, PETS, NonPetsError, Photo, build_non_pets, read_set


def test_the_set_has_enough_real_photos_and_animals() -> None:
    assert len(NON_PETS) >= 60
    assert sum(photo.animal for photo in NON_PETS) >= 5
    names = [photo.name for photo in (*NON_PETS, *PETS)]
    assert len(names) == len(set(names)), "two photos share a name"
    assert all(len(photo.sha256) == 64 for photo in (*NON_PETS, *PETS))


def test_every_photo_is_fetched_checked_and_listed(non_pet_set: Path) -> None:
    rows = (non_pet_set / MANIFEST).read_text(encoding="utf-8").splitlines()
    header, *entries = (row.split("\t") for row in rows)
    assert header == ["file", "package", "version", "path in package", "licence", "shows", "sha256"]
    assert len(entries) == len(NON_PETS) + len(PETS)
    for (file, package, version, path, licence, _shows, digest), photo in zip(
        entries, (*NON_PETS, *PETS), strict=True
    ):
        assert file.endswith(photo.name) and package == photo.source.package and path == photo.path
        assert version and licence
        assert digest == photo.sha256
    for group in ("non-pets", "pets"):
        for name, data in read_set(non_pet_set, group).items():
            with Image.open(io.BytesIO(data)) as image:
                assert min(image.size) >= 64, name


def test_a_photo_the_package_changed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package that ships a different photo under the same path changes what is measured: refused."""
    from training import nonpets

    first = NON_PETS[0]
    changed = Photo(first.source, first.path, first.name, first.shows, hashlib.sha256(b"other").hexdigest())
    monkeypatch.setattr(nonpets, "NON_PETS", (changed,))
    monkeypatch.setattr(nonpets, "PETS", ())
    with pytest.raises(NonPetsError, match="the package changed the photo"):
        build_non_pets(tmp_path / "set")
    assert not (tmp_path / "set").exists()


def test_a_built_set_is_reused(non_pet_set: Path) -> None:
    before = (non_pet_set / MANIFEST).stat().st_mtime_ns
    assert build_non_pets(non_pet_set) == non_pet_set
    assert (non_pet_set / MANIFEST).stat().st_mtime_ns == before


def test_the_command_lists_the_set(non_pet_set: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "nonpets", "--out", str(non_pet_set)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.splitlines()[0].startswith("file\tpackage\tversion")
    assert "non-pets/quokka.jpg\timgaug\t0.4.0" in result.stdout
    assert result.stdout.rstrip().endswith(f"written to {non_pet_set}")
