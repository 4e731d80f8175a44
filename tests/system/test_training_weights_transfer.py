"""Transfer learning with a weights file: the file reaches the backbone, then both training phases run.
(Where weights come from, without training: tests/unit/test_training_weights.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training_fixtures import make_class_folders
from training.cli import main


def test_transfer_training_with_weights_file(empty_keras_home: Path, tmp_path: Path) -> None:
    """--weights PATH: a randomly initialized MobileNetV2 saved at 32 px, then both phases."""
    import keras
    import numpy as np

    from training.architectures import build_model, make_backbone

    weights_file = tmp_path / "backbone.weights.h5"
    source = make_backbone("mobilenet_v2", 32, None)
    source.save_weights(str(weights_file))
    # The file really reaches the backbone (not silently ignored or replaced by a download).
    built = build_model("mobilenet_v2", 32, weights=str(weights_file))
    assert built.backbone is not None
    for layer in ("Conv1", "block_16_project"):
        np.testing.assert_array_equal(
            built.backbone.get_layer(layer).kernel.numpy(), source.get_layer(layer).kernel.numpy()
        )
    keras.backend.clear_session()

    data = make_class_folders(tmp_path / "ds", train_per_class=4, val_per_class=2, junk=False)
    output = tmp_path / "mobile"
    args = ["train", "--data-dir", str(data), "--output", str(output), "--arch", "mobilenet_v2"]
    tiny = ["--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "4"]
    assert main([*args, *tiny, "--weights", str(weights_file), "--offline"]) == 0

    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["architecture"] == "mobilenet_v2"
    assert metadata["training"]["weights"] == f"file:{weights_file}"
    assert metadata["training"]["config"]["fine_tune_epochs"] == 1
    history = json.loads((output / "report" / "evaluation.json").read_text())["history"]
    assert [(row["epoch"], row["phase"]) for row in history] == [(1, "train"), (2, "fine-tune")]
    assert history[1]["learning_rate"] == pytest.approx(1e-5)
