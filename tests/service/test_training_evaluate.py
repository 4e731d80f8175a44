"""`training evaluate` on a real (tiny, hand-weighted) export: which files it scores, and the ood block.

The tiny model calls red images cats and blue ones dogs, so on the synthetic datasets its accuracy
is 1.0 and every count below is the number of files scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_IMAGE_SIZE
from tests.training_fixtures import make_class_folders, make_flat, write_images
from training.errors import ConfigError, DatasetError, TrainingError
from training.evaluate import evaluate_saved_model, format_evaluation, ood_report


def _class_folders_without_split(root: Path, cats: int, dogs: int) -> Path:
    rng = np.random.default_rng(3)
    write_images(root / "cats", "cat", cats, rng)
    write_images(root / "dogs", "dog", dogs, rng)
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def test_dataset_with_validation_split_scores_validation_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=7, val_per_class=3)
    out = tmp_path / "report" / "evaluation.json"
    result = evaluate_saved_model(tiny_model_dir, root, output_json=out, progress=False)
    assert result["split"] == "validation"
    assert result["requested_split"] is None
    assert result["validation_source"] == "folder"
    assert result["counts"] == {"cat": 3, "dog": 3}
    assert result["metrics"]["examples"] == 6
    assert result["metrics"]["accuracy"] == 1.0
    assert result["skipped"] == []  # the junk is in train/
    assert result["model_version"] == "tiny-test-1"
    assert "ood" not in result  # the tiny model has no pet_score output
    assert json.loads(out.read_text(encoding="utf-8")) == result
    # An explicit request is honoured: split "all" is train/ and validation/ together.
    everything = evaluate_saved_model(tiny_model_dir, root, split="all", progress=False)
    assert everything["counts"] == {"cat": 10, "dog": 10}
    assert len(everything["skipped"]) == 3


def test_class_folders_without_split_score_every_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = _class_folders_without_split(tmp_path / "photos", cats=6, dogs=5)
    result = evaluate_saved_model(tiny_model_dir, root, progress=False)
    assert result["split"] == "all"
    assert result["layout"] == "class-folders"
    assert result["counts"] == {"cat": 6, "dog": 5}
    assert result["metrics"]["examples"] == 11
    assert result["metrics"]["accuracy"] == 1.0
    assert [item["path"] for item in result["skipped"]] == ["cats/broken.jpg"]
    assert result["validation_source"] == f"all files (no train/validation split in {root.resolve()})"
    assert "no train/validation split" in result["note"]
    assert "scored every file" in format_evaluation(result)


def test_explicit_validation_on_data_without_split_keeps_the_seeded_fraction(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = _class_folders_without_split(tmp_path / "photos", cats=10, dogs=10)
    result = evaluate_saved_model(tiny_model_dir, root, split="validation", progress=False)
    assert result["split"] == "validation"
    # 20% of each class (the default: the tiny model's metadata records no fraction or seed);
    # broken.jpg may be drawn into it, so count the files scored and skipped together.
    assert result["counts"]["dog"] == 2
    assert result["counts"]["cat"] + len(result["skipped"]) == round(11 * 0.2)
    assert result["validation_source"] == "split(fraction=0.2, seed=42)"
    assert "no train/validation split" in result["note"]
    assert "held-out validation part" in result["note"]
    again = evaluate_saved_model(
        tiny_model_dir, root, split="validation", val_fraction=0.5, seed=7, progress=False
    )
    assert again["counts"]["dog"] == 5
    assert again["validation_source"] == "split(fraction=0.5, seed=7)"


def test_kaggle_flat_files_score_every_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = make_flat(tmp_path / "flat", per_class=7)
    result = evaluate_saved_model(tiny_model_dir, root, progress=False)
    assert result["split"] == "all"
    assert result["layout"] == "kaggle-flat"
    assert result["counts"] == {"cat": 7, "dog": 7}
    assert result["metrics"]["examples"] == 14
    assert result["metrics"]["accuracy"] == 1.0
    assert {item["path"] for item in result["skipped"]} == {
        "cat.corrupt.jpg",
        "cat.empty.jpg",
        "cat.notes.txt",
    }
    assert result["validation_source"].startswith("all files (no train/validation split")
    # --limit-per-class still applies: the first files of each class, sorted by name.
    limited = evaluate_saved_model(tiny_model_dir, root, limit=2, progress=False)
    assert limited["counts"] == {"cat": 2, "dog": 2}


def test_matches_the_model_called_directly(tiny_model_dir: Path, tmp_path: Path) -> None:
    from catdog.saved_model import load_exported_model
    from training.data import load_dataset
    from training.metrics import compute_metrics

    root = make_flat(tmp_path / "flat", per_class=5, junk=False)
    result = evaluate_saved_model(tiny_model_dir, root, progress=False, batch_size=3)  # uneven batches
    data = load_dataset(root, TINY_IMAGE_SIZE, splits=("all",), progress=False).splits["all"]
    direct = load_exported_model(tiny_model_dir).predict(data.images).probabilities[:, 1]
    assert result["metrics"]["log_loss"] == pytest.approx(compute_metrics(data.labels, direct)["log_loss"])


@pytest.fixture(scope="module")
def pet_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like the tiny model, plus pet_score = sigmoid(10 * blue - 5): dogs (blue) look like pets, cats
    (red) do not, so a 0.5 threshold wrongly flags exactly the cats."""
    import keras

    from training.export import export_saved_model

    inputs = keras.Input((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1.0 / 255)(inputs))
    p_dog = keras.layers.Dense(1, activation="sigmoid")(x)
    pet = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, [p_dog, pet])
    model.layers[-2].set_weights([np.array([[-10.0], [0.0], [10.0]]), np.array([0.0])])
    model.layers[-1].set_weights([np.array([[0.0], [0.0], [10.0]]), np.array([-5.0])])
    out = tmp_path_factory.mktemp("models") / "pet"
    metadata = {
        "class_names": ["cat", "dog"],
        "version": "tiny-pet-1",
        "architecture": "tiny-color",
        "ood": {"threshold": 0.5, "method": "hand-set"},
        "training": {"val_fraction": 0.5, "seed": 3},
    }
    export_saved_model(model, out, TINY_IMAGE_SIZE, metadata)
    return out


def _pet_scores(model_dir: Path, root: Path) -> np.ndarray:
    from catdog.saved_model import load_exported_model
    from training.data import load_dataset

    images = load_dataset(root, TINY_IMAGE_SIZE, splits=("validation",), progress=False).splits["validation"]
    pet_score = load_exported_model(model_dir).predict(images.images).pet_score
    assert pet_score is not None
    return pet_score


def test_pet_score_model_reports_the_ood_block(pet_model_dir: Path, tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", train_per_class=2, val_per_class=4, junk=False)
    result = evaluate_saved_model(pet_model_dir, root, progress=False)
    assert result["metrics"]["accuracy"] == 1.0
    ood = result["ood"]
    assert ood["threshold"] == 0.5
    assert ood["threshold_source"] == "metadata"
    assert ood["examples"] == 8
    assert ood["pets_flagged"] == 4  # the four red cats
    assert ood["pets_flagged_rate"] == 0.5
    quantiles = ood["pet_score_quantiles"]
    assert list(quantiles) == ["1%", "5%", "50%"]
    scores = _pet_scores(pet_model_dir, root)
    assert (scores[:4] < 0.5).all() and (scores[4:] > 0.5).all()  # cats first, then dogs
    assert [quantiles[k] for k in quantiles] == pytest.approx(np.quantile(scores, [0.01, 0.05, 0.5]).tolist())
    assert "4 of 8 pets flagged (50.00%)" in format_evaluation(result)
    # The threshold argument overrides the metadata's.
    override = evaluate_saved_model(pet_model_dir, root, threshold=0.001, progress=False)["ood"]
    assert override["threshold"] == 0.001
    assert override["threshold_source"] == "argument"
    assert override["pets_flagged"] == 0


def test_pet_score_model_draws_the_split_recorded_in_its_metadata(
    pet_model_dir: Path, tmp_path: Path
) -> None:
    root = make_flat(tmp_path / "flat", per_class=6, junk=False)
    result = evaluate_saved_model(pet_model_dir, root, split="validation", progress=False)
    assert result["validation_source"] == "split(fraction=0.5, seed=3)"
    assert result["counts"] == {"cat": 3, "dog": 3}
    assert result["ood"]["pets_flagged"] == 3


def test_ood_report_without_a_threshold() -> None:
    report = ood_report([0.2, 0.4, 0.9, 0.95], None, None)
    assert report["pets_flagged"] is None and report["pets_flagged_rate"] is None
    assert report["pet_score_quantiles"]["50%"] == pytest.approx(0.65)
    flagged = ood_report([0.2, 0.4, 0.9, 0.95], 0.4, "argument")
    assert flagged["pets_flagged"] == 1  # strictly below the threshold


def test_mistakes_are_one_line_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = make_flat(tmp_path / "flat", per_class=2, junk=False)
    with pytest.raises(TrainingError, match="no exported model"):
        evaluate_saved_model(tmp_path / "nothing", root, progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        evaluate_saved_model(tiny_model_dir, tmp_path / "missing", progress=False)
    with pytest.raises(ConfigError, match="unknown split"):
        evaluate_saved_model(tiny_model_dir, root, split="test", progress=False)
    with pytest.raises(ConfigError, match="no pet_score output"):
        evaluate_saved_model(tiny_model_dir, root, threshold=0.5, progress=False)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        evaluate_saved_model(tiny_model_dir, root, threshold=1.5, progress=False)
