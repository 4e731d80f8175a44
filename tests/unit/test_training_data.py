"""Dataset discovery, splitting, skipping of bad files and the data hash (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catdog.imaging import load_model_input
from tests.training_fixtures import make_class_folders, make_flat, write_images
from training.data import LabeledFile, discover, load_dataset
from training.errors import DatasetError


def _names(files: list[LabeledFile]) -> list[str]:
    return sorted(f.path.name for f in files)


def test_class_folders_with_validation(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=6, val_per_class=4)
    data = load_dataset(root, 24, progress=False)
    assert data.layout == "class-folders"
    assert data.validation_source == "folder"
    assert data.counts() == {"train": {"cat": 6, "dog": 6}, "validation": {"cat": 4, "dog": 4}}
    train = data.splits["train"]
    assert train.images.shape == (12, 24, 24, 3)
    assert train.images.dtype == np.uint8
    assert train.labels.tolist() == [0] * 6 + [1] * 6
    # The synthetic cats are red, the dogs blue: labels really follow the folders.
    red_minus_blue = train.images[..., 0].mean(axis=(1, 2)) - train.images[..., 2].mean(axis=(1, 2))
    assert (red_minus_blue[train.labels == 0] > 0).all()
    assert (red_minus_blue[train.labels == 1] < 0).all()


def test_bad_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=3, val_per_class=2)
    data = load_dataset(root, 16, progress=False)
    assert data.skipped_counts() == {"train": 3, "validation": 0}
    reasons = {item.path: item.reason for item in data.skipped["train"]}
    assert set(reasons) == {"train/cats/corrupt.jpg", "train/cats/empty.jpg", "train/cats/notes.txt"}
    assert "empty" in reasons["train/cats/empty.jpg"]
    assert "extension" in reasons["train/cats/notes.txt"]
    assert data.counts()["train"] == {"cat": 3, "dog": 3}


def test_images_match_the_serving_pipeline(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=2, val_per_class=1, junk=False)
    data = load_dataset(root, 20, progress=False)
    first = root / data.splits["train"].paths[0]
    expected = load_model_input(first.read_bytes(), 20, max_pixels=50_000_000)
    np.testing.assert_array_equal(data.splits["train"].images[0], expected)


def test_val_folder_and_singular_class_names(tmp_path: Path) -> None:
    root = make_class_folders(
        tmp_path / "data", 3, 2, val_name="val", folder_names=("Cat", "dog"), junk=False
    )
    found = discover(root)
    assert found.validation_source == "folder"
    assert len(found.files["train"]) == 6
    assert len(found.files["validation"]) == 4


def test_kaggle_flat_directory_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "flat", per_class=10, junk=False)
    found = discover(root, val_fraction=0.2, seed=1)
    assert found.layout == "kaggle-flat"
    assert found.validation_source.startswith("split")
    for split, expected in (("train", 8), ("validation", 2)):
        labels = [f.label for f in found.files[split]]
        assert labels.count(0) == labels.count(1) == expected
    again = discover(root, val_fraction=0.2, seed=1)
    assert _names(again.files["validation"]) == _names(found.files["validation"])
    other = discover(root, val_fraction=0.2, seed=2)
    assert _names(other.files["validation"]) != _names(found.files["validation"])
    assert not set(_names(found.files["train"])) & set(_names(found.files["validation"]))


def test_kaggle_flat_bad_files_are_skipped(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "flat", per_class=6)
    data = load_dataset(root, 16, val_fraction=0.25, progress=False)
    skipped = {item.path for items in data.skipped.values() for item in items}
    # The .txt is refused by extension; the corrupt and empty cat.*.jpg only when decoded,
    # in whichever split the seeded split put them.
    assert skipped == {"cat.notes.txt", "cat.corrupt.jpg", "cat.empty.jpg"}
    assert sum(data.skipped_counts().values()) == 3
    total = {name: sum(c[name] for c in data.counts().values()) for name in ("cat", "dog")}
    assert total == {"cat": 6, "dog": 6}


def test_kaggle_flat_train_folder(tmp_path: Path) -> None:
    make_flat(tmp_path / "kaggle" / "train", per_class=5, junk=False)
    found = discover(tmp_path / "kaggle", val_fraction=0.4)
    assert found.layout == "kaggle-flat"
    assert len(found.files["validation"]) == 4
    assert len(found.files["train"]) == 6


def test_class_folders_without_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_images(tmp_path / "d" / "cats", "cat", 5, rng)
    write_images(tmp_path / "d" / "dogs", "dog", 5, rng)
    found = discover(tmp_path / "d", val_fraction=0.2)
    assert found.layout == "class-folders"
    assert found.validation_source.startswith("split")
    assert sorted(f.label for f in found.files["validation"]) == [0, 1]


def test_limit_per_class_takes_first_sorted_files(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=6, val_per_class=4, junk=False)
    data = load_dataset(root, 16, limit=2, progress=False)
    assert data.counts() == {"train": {"cat": 2, "dog": 2}, "validation": {"cat": 2, "dog": 2}}
    assert data.splits["train"].paths == [
        "train/cats/cat.0.jpg",
        "train/cats/cat.1.jpg",
        "train/dogs/dog.0.jpg",
        "train/dogs/dog.1.jpg",
    ]


def test_data_hash_tracks_file_contents(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=3, val_per_class=2)
    first = load_dataset(root, 16, progress=False).data_hash
    assert load_dataset(root, 16, progress=False).data_hash == first
    assert len(first) == 64
    # Skipped files are not part of the data: changing one leaves the hash alone...
    (root / "train" / "cats" / "notes.txt").write_text("changed")
    assert load_dataset(root, 16, progress=False).data_hash == first
    # ...changing a used photo does not.
    target = root / "validation" / "dogs" / "dog.0.jpg"
    target.write_bytes((root / "validation" / "dogs" / "dog.1.jpg").read_bytes())
    assert load_dataset(root, 16, progress=False).data_hash != first


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does-not-exist does not exist.*expected"):
        discover(tmp_path / "does-not-exist")


def test_directory_without_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "README.md").write_text("nothing here")
    with pytest.raises(DatasetError, match=r"no cat/dog images found in .*empty.*cats,dogs"):
        discover(tmp_path / "empty")


def test_a_class_with_no_images_is_a_clear_error(tmp_path: Path) -> None:
    write_images(tmp_path / "d" / "cats", "cat", 3, np.random.default_rng(0))
    (tmp_path / "d" / "dogs").mkdir()
    with pytest.raises(DatasetError, match="no dog images"):
        discover(tmp_path / "d")


def test_all_files_undecodable_is_a_clear_error(tmp_path: Path) -> None:
    for folder in ("cats", "dogs"):
        (tmp_path / "d" / folder).mkdir(parents=True)
        for index in range(2):
            (tmp_path / "d" / folder / f"x{index}.jpg").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="could be decoded"):
        load_dataset(tmp_path / "d", 16, progress=False)


def test_all_split_of_class_folders_without_split_is_every_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_images(tmp_path / "d" / "cats", "cat", 5, rng)
    write_images(tmp_path / "d" / "dogs", "dog", 4, rng)
    found = discover(tmp_path / "d", splits=("all",))
    assert not found.has_validation_split
    assert list(found.files) == ["all"]
    assert found.validation_source.startswith("none")
    assert sorted(f.label for f in found.files["all"]) == [0] * 5 + [1] * 4
    # Nothing is drawn, so the fraction is not even looked at.
    assert discover(tmp_path / "d", val_fraction=5.0, splits=("all",)).files["all"] == found.files["all"]
    data = load_dataset(tmp_path / "d", 16, splits=("all",), progress=False)
    assert data.counts() == {"all": {"cat": 5, "dog": 4}}
    assert not data.has_validation_split


def test_all_split_works_with_one_photo_per_class(tmp_path: Path) -> None:
    # Too few to draw a validation split from; scoring everything must still work.
    rng = np.random.default_rng(0)
    write_images(tmp_path / "d" / "cat", "cat", 1, rng)
    write_images(tmp_path / "d" / "dog", "dog", 1, rng)
    assert len(discover(tmp_path / "d", splits=("all",)).files["all"]) == 2
    with pytest.raises(DatasetError, match="no cat images for the validation split"):
        discover(tmp_path / "d")


def test_all_split_of_kaggle_flat_counts_junk_as_skipped(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "flat", per_class=4)
    data = load_dataset(root, 16, splits=("all",), progress=False)
    assert data.layout == "kaggle-flat"
    assert data.counts() == {"all": {"cat": 4, "dog": 4}}
    assert {item.path for item in data.skipped["all"]} == {
        "cat.notes.txt",
        "cat.corrupt.jpg",
        "cat.empty.jpg",
    }


def test_all_split_with_validation_folder_is_train_plus_validation(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=3, val_per_class=2)
    found = discover(root, splits=("all",))
    assert found.has_validation_split
    assert found.validation_source == "folder"
    assert len(found.files["all"]) == 12  # 3 + 3 train, 2 + 2 validation, corrupt.jpg and empty.jpg
    assert {s.path for s in found.skipped["all"]} == {"train/cats/notes.txt"}  # by extension only
    assert discover(root).has_validation_split


def test_drawn_validation_is_reported_as_no_validation_split(tmp_path: Path) -> None:
    found = discover(make_flat(tmp_path / "flat", per_class=5, junk=False))
    assert not found.has_validation_split
    assert set(found.files) == {"train", "validation"}
    # An empty validation folder is no split either.
    root = make_class_folders(tmp_path / "data", 3, 2, junk=False)
    for path in (root / "validation").rglob("*.jpg"):
        path.unlink()
    assert not discover(root).has_validation_split


def test_unknown_split_is_a_clear_error(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "flat", per_class=2, junk=False)
    with pytest.raises(DatasetError, match="unknown split 'test'; choose from train, validation, all"):
        load_dataset(root, 16, splits=("test",), progress=False)
