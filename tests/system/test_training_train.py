"""End-to-end training on tiny synthetic data: CLI, export contract, learning, determinism, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.training_fixtures import make_class_folders, make_flat
from training.cli import main

REPO = Path(__file__).resolve().parents[2]
METADATA_KEYS = {
    "name",
    "version",
    "architecture",
    "class_names",
    "image_size",
    "preprocessing",
    "training",
    "metrics",
    "created_at",
    "tensorflow_version",
    "keras_version",
}
TRAINING_KEYS = {"config", "data", "epochs_run", "best_epoch", "weights"}
CONFIG_KEYS = {
    "arch",
    "epochs",
    "fine_tune_epochs",
    "batch_size",
    "learning_rate",
    "seed",
    "augment",
    "flip_tta",
}
DATA_KEYS = {"data_dir", "layout", "counts", "skipped", "data_hash"}
TINY = ["--image-size", "32", "--batch-size", "8"]
SCRATCH = ["--preset", "scratch", *TINY]


@pytest.fixture(scope="module")
def class_folder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("data") / "ds", train_per_class=12, val_per_class=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, class_folder_data: Path) -> Path:
    """The scratch preset (scratch-cnn) for 2 epochs through the CLI."""
    output = tmp_path_factory.mktemp("models") / "tiny"
    code = main(
        ["train", "--data-dir", str(class_folder_data), "--output", str(output), "--epochs", "2", *SCRATCH]
    )
    assert code == 0
    return output


def _evaluation(model_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((model_dir / "report" / "evaluation.json").read_text())
    return result


def test_cli_train_writes_the_export_contract(trained: Path) -> None:
    metadata = json.loads((trained / "metadata.json").read_text())
    assert metadata.keys() >= METADATA_KEYS
    assert metadata["training"].keys() >= TRAINING_KEYS
    assert metadata["training"]["config"].keys() >= CONFIG_KEYS
    assert metadata["training"]["data"].keys() >= DATA_KEYS
    data = metadata["training"]["data"]
    assert metadata["name"] == "tiny"
    assert metadata["architecture"] == "scratch-cnn"
    assert metadata["class_names"] == ["cat", "dog"]
    assert metadata["image_size"] == 32
    assert metadata["version"].startswith("scratch-cnn-")
    assert metadata["version"].endswith(data["data_hash"][:8])
    assert data["counts"] == {
        "train": {"cat": 12, "dog": 12},
        "validation": {"cat": 8, "dog": 8},
    }
    assert data["skipped"] == {"train": 3, "validation": 0}
    assert metadata["training"]["epochs_run"] == 2
    assert {"accuracy", "log_loss", "roc_auc", "confusion_matrix", "per_class"} <= metadata["metrics"].keys()
    assert metadata["created_at"].endswith("Z")
    # The scratch preset exports mirror-averaging and reports what it adds over single views.
    assert metadata["training"]["config"]["flip_tta"] is True
    assert "mirror" in metadata["test_time_augmentation"]

    evaluation = _evaluation(trained)
    assert {"metrics", "history", "skipped", "counts", "data_hash", "best_epoch"} <= evaluation.keys()
    assert [row["epoch"] for row in evaluation["history"]] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= evaluation["history"][0].keys()
    assert len(evaluation["skipped"]["train"]) == 3
    assert sum(map(sum, evaluation["metrics"]["confusion_matrix"])) == 16
    assert evaluation["metrics"]["single_view"].keys() == {"accuracy", "log_loss", "roc_auc"}
    for name in ("learning_curves.png", "confusion_matrix.png", "roc_curve.png"):
        assert (trained / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing half-written left beside the model.
    assert [p.name for p in trained.parent.iterdir()] == ["tiny"]


def test_saved_model_serves_probabilities(trained: Path) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(trained))
    images = np.random.default_rng(0).integers(0, 256, (3, 50, 40, 3), dtype=np.uint8)  # any size
    probabilities = loaded.serve(tf.constant(images))["probabilities"].numpy()
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_evaluate_command_reproduces_training_metrics(
    trained: Path, class_folder_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output_json = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--model",
            str(trained),
            "--data-dir",
            str(class_folder_data),
            "--output-json",
            str(output_json),
        ]
    )
    assert code == 0
    assert "accuracy" in capsys.readouterr().out
    result = json.loads(output_json.read_text())
    expected = _evaluation(trained)["metrics"]
    assert result["metrics"]["confusion_matrix"] == expected["confusion_matrix"]
    assert result["metrics"]["accuracy"] == expected["accuracy"]
    assert result["metrics"]["log_loss"] == pytest.approx(expected["log_loss"], abs=1e-6)
    assert result["counts"] == {"cat": 8, "dog": 8}


def test_separable_data_is_learned(tmp_path: Path) -> None:
    """Red cats vs blue dogs: anything under 90% validation accuracy means training is broken."""
    data = make_flat(tmp_path / "flat", per_class=20, junk=False)
    output = tmp_path / "learned"
    code = main(
        [
            "train", "--data-dir", str(data), "--output", str(output), "--arch", "small-cnn",
            "--epochs", "6", "--no-augment", "--val-fraction", "0.3", *TINY,
        ]
    )  # fmt: skip
    assert code == 0
    evaluation = _evaluation(output)
    assert evaluation["training"]["data"]["layout"] == "kaggle-flat"
    assert evaluation["training"]["config"]["flip_tta"] is False  # the baseline recipe, as published
    assert "single_view" not in evaluation["metrics"]
    assert evaluation["counts"]["validation"] == {"cat": 6, "dog": 6}
    assert evaluation["metrics"]["accuracy"] > 0.9
    assert evaluation["metrics"]["roc_auc"] > 0.95


def test_same_command_gives_identical_numbers(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "ds", train_per_class=8, val_per_class=4, seed=3, junk=False)
    results = []
    for name in ("a", "b"):
        output = tmp_path / name
        args = ["train", "--data-dir", str(data), "--output", str(output), "--epochs", "2", "--version", "v"]
        assert main([*args, *SCRATCH]) == 0
        evaluation = _evaluation(output)
        results.append((evaluation["metrics"], evaluation["history"], evaluation["best_epoch"]))
    assert results[0] == results[1]


def test_rerun_replaces_the_previous_model(tmp_path: Path, class_folder_data: Path) -> None:
    output = tmp_path / "model"
    output.mkdir()
    (output / "stale.txt").write_text("from an older run")
    args = ["train", "--data-dir", str(class_folder_data), "--output", str(output), "--arch", "small-cnn"]
    assert main([*args, "--epochs", "1", "--limit-per-class", "3", "--version", "v2", *TINY]) == 0
    assert not (output / "stale.txt").exists()
    assert json.loads((output / "metadata.json").read_text())["version"] == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_next_version_writes_the_repository_s_next_number(tmp_path: Path, class_folder_data: Path) -> None:
    from catdog.repository import complete_versions

    model_folder = tmp_path / "repository" / "catdog"
    (model_folder / "1").mkdir(parents=True)  # a version being copied in: its number is taken
    args = ["train", "--data-dir", str(class_folder_data), "--output", str(model_folder), "--next-version"]
    assert main([*args, "--arch", "small-cnn", "--epochs", "1", "--limit-per-class", "3", *TINY]) == 0
    assert list(complete_versions(model_folder)) == [2]
    assert json.loads((model_folder / "2" / "metadata.json").read_text())["name"] == "2"
    assert sorted(p.name for p in model_folder.iterdir()) == ["1", "2"]  # no staging folder left
    # A failed run leaves no version and no staging folder behind.
    assert main([*args, "--arch", "resnet9000"]) == 2
    assert sorted(p.name for p in model_folder.iterdir()) == ["1", "2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-dir", "{tmp}/missing"], "does not exist"),
        (["--data-dir", "{data}", "--arch", "resnet9000"], "unknown architecture 'resnet9000'"),
        (["--data-dir", "{data}", "--preset", "nope"], "unknown preset 'nope'"),
        (
            ["--data-dir", "{data}", "--preset", "scratch", "--fine-tune-epochs", "2"],
            "needs a pretrained backbone",
        ),
        (["--data-dir", "{data}", "--arch", "efficientnet_lite9"], "unknown EfficientNet-Lite variant"),
        (["--data-dir", "{data}", "--head-c", "0.1,-1"], "--head-c"),
        (["--data-dir", "{data}", "--ood-quantile", "0.7"], "--ood-quantile"),
        (["--data-dir", "{data}", "--preset", "ensemble", "--fine-tune-epochs", "1"], "needs one backbone"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path,
    class_folder_data: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    argv = [a.format(tmp=tmp_path, data=class_folder_data) for a in args]
    assert main(["train", *argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "out").exists()


def test_module_entry_point_has_no_traceback_for_user_errors(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--data-dir", str(tmp_path / "nope"), "--output", "x"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: data directory")


def test_mounted_output_gets_its_contents_swapped(tmp_path: Path) -> None:
    """A Docker volume cannot be renamed: its contents are replaced, metadata.json moved last."""
    from training.report import replace_contents

    staging, target = tmp_path / "staging", tmp_path / "volume"
    (staging / "variables").mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"pb")
    (staging / "metadata.json").write_text("{}")
    (target / "old-dir").mkdir(parents=True)
    (target / "metadata.json").write_text("old")
    replace_contents(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["metadata.json", "saved_model.pb", "variables"]
    assert (target / "metadata.json").read_text() == "{}"
    assert not staging.exists()
