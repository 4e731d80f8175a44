"""The contract between training and serving (catdog/): the metadata.json schema and the one loader.

Every failure must be one readable line that names the file or field at fault: it is what an
operator sees when `python -m app serve` refuses a model.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from catdog.contract import METADATA_FILE, SAVED_MODEL_FILE, MetadataError, ModelMetadata, read_metadata
from catdog.saved_model import ModelLoadError, load_exported_model, model_exists
from tests.conftest import REPO_ROOT, TINY_IMAGE_SIZE, tiny_pet_score
from tests.images import BLUE, RED

VALID: dict[str, Any] = {
    "version": "v1",
    "architecture": "tiny",
    "class_names": ["cat", "dog"],
    "image_size": 32,
}


def copy_model(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(source, target)
    return target


def rewrite_metadata(model_dir: Path, **changes: Any) -> None:
    path = model_dir / METADATA_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def load_error(model_dir: Path) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_exported_model(model_dir)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# --- ModelMetadata -------------------------------------------------------------------------------


def test_minimal_metadata_defaults_to_probabilities_only() -> None:
    metadata = ModelMetadata.model_validate(VALID)
    assert metadata.outputs == ["probabilities"]
    assert metadata.ood is None
    assert not metadata.has_pet_score


def test_pet_score_metadata_and_extra_fields_survive_a_round_trip() -> None:
    document = {
        **VALID,
        "outputs": ["probabilities", "pet_score"],
        "ood": {"threshold": 0.3, "method": "imagenet cat+dog classes", "calibration": {"photos": 200}},
        "metrics": {"accuracy": 0.97},
    }
    metadata = ModelMetadata.model_validate(document)
    assert metadata.has_pet_score
    assert metadata.ood is not None and metadata.ood.threshold == 0.3
    dumped = metadata.model_dump(mode="json")
    assert dumped["metrics"] == {"accuracy": 0.97}
    assert dumped["ood"]["calibration"] == {"photos": 200}
    assert ModelMetadata.model_validate(dumped) == metadata


@pytest.mark.parametrize(
    ("class_names", "expected"),
    [
        (["dog", "cat"], "class_names must be ['cat', 'dog'], got ['dog', 'cat']"),
        (["cat", "dog", "bird"], "class_names must be ['cat', 'dog'], got ['cat', 'dog', 'bird']"),
        (["cats", "dogs"], "class_names must be ['cat', 'dog']"),
    ],
)
def test_wrong_class_names_are_refused(class_names: list[str], expected: str) -> None:
    with pytest.raises(ValidationError, match=r"class_names\n") as caught:
        ModelMetadata.model_validate({**VALID, "class_names": class_names})
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "outputs",
    [["pet_score"], ["probabilities", "logits"], [], ["logits"]],
    ids=["no-probabilities", "unknown", "empty", "only-unknown"],
)
def test_wrong_outputs_are_refused(outputs: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelMetadata.model_validate({**VALID, "outputs": outputs})
    assert f"outputs must be 'probabilities' and optionally 'pet_score', got {outputs}" in str(caught.value)


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_ood_threshold_outside_zero_one_is_refused(threshold: float) -> None:
    with pytest.raises(ValidationError, match=r"ood\.threshold"):
        ModelMetadata.model_validate({**VALID, "ood": {"threshold": threshold}})


def test_missing_fields_are_each_named_on_one_line(tmp_path: Path) -> None:
    (tmp_path / METADATA_FILE).write_text(json.dumps({"version": "v1", "class_names": ["cat", "dog"]}))
    with pytest.raises(MetadataError) as caught:
        read_metadata(tmp_path)
    message = str(caught.value)
    assert message == (
        f"cannot use {tmp_path / METADATA_FILE}: architecture: Field required; image_size: Field required"
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"version": ""}, "version: String should have at least 1 character"),
        ({"image_size": 0}, "image_size: Input should be greater than 0"),
        ({"image_size": "large"}, "image_size: Input should be a valid integer"),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    (tmp_path / METADATA_FILE).write_text(json.dumps({**VALID, **changes}))
    with pytest.raises(MetadataError, match=re.escape(expected)):
        read_metadata(tmp_path)


# --- load_exported_model -------------------------------------------------------------------------


def test_missing_directory_names_it_and_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert not model_exists(missing)
    message = load_error(missing)
    assert str(missing) in message
    assert SAVED_MODEL_FILE in message and METADATA_FILE in message
    assert "CATDOG_MODEL_DIR" in message


def test_directory_without_metadata_is_not_a_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path)
    (model_dir / METADATA_FILE).unlink()
    assert not model_exists(model_dir)
    assert str(model_dir) in load_error(model_dir)


@pytest.mark.parametrize("content", ['{"version": "v1",', "", "[1, 2]", "not json"])
def test_broken_metadata_json_names_the_file(tiny_model_dir: Path, tmp_path: Path, content: str) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path)
    (model_dir / METADATA_FILE).write_text(content)
    message = load_error(model_dir)
    assert message.startswith(f"cannot use {model_dir / METADATA_FILE}: ")


def test_metadata_with_wrong_class_order_is_refused_before_loading(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path)
    rewrite_metadata(model_dir, class_names=["dog", "cat"])
    message = load_error(model_dir)
    assert str(model_dir / METADATA_FILE) in message
    assert "class_names must be ['cat', 'dog']" in message


def test_truncated_saved_model_names_the_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path)
    pb = model_dir / SAVED_MODEL_FILE
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
    message = load_error(model_dir)
    assert message.startswith(f"cannot load the SavedModel at {model_dir}")
    assert str(pb) in message


def test_missing_variables_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path)
    shutil.rmtree(model_dir / "variables")
    assert str(model_dir) in load_error(model_dir)


def test_metadata_promising_pet_score_the_graph_lacks_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path)
    rewrite_metadata(model_dir, outputs=["probabilities", "pet_score"], ood={"threshold": 0.5})
    message = load_error(model_dir)
    assert "returns ['probabilities'], metadata.json promises ['probabilities', 'pet_score']" in message


def solid_batch(*colors: tuple[int, int, int]) -> np.ndarray:
    return np.stack([np.full((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), c, dtype=np.uint8) for c in colors])


def test_model_without_pet_score_predicts_probabilities_only(tiny_model_dir: Path) -> None:
    model = load_exported_model(tiny_model_dir)
    assert model.metadata.class_names == ["cat", "dog"]
    assert model.metadata.image_size == TINY_IMAGE_SIZE
    assert (model.pet_threshold, model.pet_threshold_source) == (None, "no pet_score output")
    assert model.runtime_name == "tensorflow-fp32"
    outputs = model.predict(solid_batch(RED, BLUE))
    assert outputs.probabilities.dtype == np.float64
    assert outputs.probabilities.shape == (2, 2)
    assert outputs.probabilities.argmax(axis=1).tolist() == [0, 1]
    assert outputs.pet_score is None


def test_model_with_pet_score_predicts_both(tiny_pet_model_dir: Path) -> None:
    model = load_exported_model(tiny_pet_model_dir)
    assert model.metadata.has_pet_score
    assert model.metadata.ood is not None and model.metadata.ood.threshold == 0.5
    assert (model.pet_threshold, model.pet_threshold_source) == (0.5, "metadata.ood.threshold")
    dark = (60, 0, 0)
    outputs = model.predict(solid_batch(RED, dark, BLUE))
    assert outputs.probabilities.argmax(axis=1).tolist() == [0, 0, 1]
    assert outputs.pet_score is not None
    assert outputs.pet_score.dtype == np.float64
    assert outputs.pet_score.shape == (3,)
    expected = [tiny_pet_score(RED), tiny_pet_score(dark), tiny_pet_score(BLUE)]
    np.testing.assert_allclose(outputs.pet_score, expected, atol=1e-4)


# --- the packages' boundaries --------------------------------------------------------------------


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level package of every import in `package`/, per file."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO_ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("app", {"training"}), ("training", {"app"}), ("catdog", {"app", "training", "fastapi", "keras"})],
)
def test_app_and_training_share_only_catdog(package: str, forbidden: set[str]) -> None:
    files = imported_packages(package)
    assert files, f"no Python files under {package}/"
    offenders = {path: sorted(names & forbidden) for path, names in files.items() if names & forbidden}
    assert not offenders, f"{package}/ must not import {sorted(forbidden)}: {offenders}"
