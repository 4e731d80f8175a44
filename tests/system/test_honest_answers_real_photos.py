"""Honest answers on real photos: every runtime that may serve the committed model gives each of the 1000
validation photos the same label and the same pet flag, and the served model tells pets from real
non-pet photos. (No protocol answering exactly 0 or 1: tests/service/test_honest_answers.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA_DIR, DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def validation_photos() -> tuple[np.ndarray, np.ndarray]:
    """All validation photos, decoded at the committed model's input size as the service decodes them."""
    from catdog.contract import read_metadata
    from training.data import load_dataset

    size = read_metadata(DEFAULT_MODEL_DIR).image_size
    split = load_dataset(DATA_DIR, size, splits=("validation",), progress=False).splits["validation"]
    return split.images, split.labels


def _served_answers(runtime: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(P(cat), pet flag, threshold) of every image through the model as the service serves it."""
    from app.model import scores
    from catdog.saved_model import load_exported_model

    model = load_exported_model(DEFAULT_MODEL_DIR, runtime)
    answers = [s for start in range(0, len(images), 32) for s in scores(model, images[start : start + 32])]
    p_cat = np.array([s.probabilities[0] for s in answers])
    flagged = np.array(
        [s.pet_score is not None and s.pet_score < (model.pet_threshold or 0.0) for s in answers]
    )
    return p_cat, flagged, model.pet_threshold


def _servable_runtimes() -> list[str]:
    """Every derived model of the committed model that auto or CATDOG_RUNTIME may serve here."""
    from catdog.contract import read_metadata
    from catdog.runtimes import usable_derived

    metadata = read_metadata(DEFAULT_MODEL_DIR)
    return [entry.key for entry, why in usable_derived(metadata, DEFAULT_MODEL_DIR) if not why]


def test_every_runtime_gives_the_same_answers_on_the_validation_photos(
    validation_photos: tuple[np.ndarray, np.ndarray],
) -> None:
    """The GPU image serves TensorFlow, the CPU image what auto chooses, and CATDOG_RUNTIME any derived
    model that passed its gate: on all 1000 validation photos each agrees with TensorFlow within the
    gate (training/derive.py GATE), with its own pet threshold, and none answers 0 or 1."""
    from training.derive import GATE

    images, labels = validation_photos
    runtimes = _servable_runtimes()
    assert runtimes, "the committed model lists no derived model that can be served here"
    reference_p, reference_flags, _ = _served_answers("tensorflow", images)
    for runtime in runtimes:
        p_cat, flagged, threshold = _served_answers(runtime, images)
        assert threshold is not None
        label_changes = int(np.sum((p_cat < 0.5) != (reference_p < 0.5)))
        flag_changes = int(np.sum(flagged != reference_flags))
        assert label_changes <= GATE.class_disagreements, (runtime, label_changes)
        assert flag_changes <= GATE.pet_flags_per_1000 * len(labels) / 1000, (runtime, flag_changes)
        assert np.max(np.abs(p_cat - reference_p)) <= GATE.max_delta_p_cat, runtime
        assert np.all((p_cat > 0) & (p_cat < 1)), runtime
        # Continuous, not on the 1/256 grid of a quantized softmax: the photos the model is not sure
        # of (it is sure of most: it was fitted on these) each get their own value.
        unsure = p_cat[(p_cat > 1e-3) & (p_cat < 1 - 1e-3)]
        assert len(unsure) >= 20, (runtime, len(unsure))
        assert len(np.unique(unsure)) >= 0.9 * len(unsure), runtime


def test_the_served_model_tells_pets_from_everything_else(
    validation_photos: tuple[np.ndarray, np.ndarray], non_pet_set: Path
) -> None:
    """The goals, in the runtime auto serves: at most 0.5% of the validation pets flagged, at most 2%
    of the real non-pet photos passed (training/nonpets.py), and the packages' two pets passed."""
    from catdog.imaging import load_model_input
    from training.nonpets import read_set

    images, _ = validation_photos
    _, flagged, threshold = _served_answers("auto", images)
    assert flagged.mean() <= 0.005, f"{flagged.sum()} of {len(images)} validation pets flagged"
    size = images.shape[1]
    for group, most in (("non-pets", 0.02), ("pets", None)):
        photos = read_set(non_pet_set, group)
        pixels = np.stack([load_model_input(data, size, 40_000_000) for data in photos.values()])
        _, flags, _ = _served_answers("auto", pixels)
        if most is None:
            assert not flags.any(), f"pets flagged: {[n for n, f in zip(photos, flags, strict=True) if f]}"
        else:
            passed = [name for name, f in zip(photos, flags, strict=True) if not f]
            assert len(passed) <= most * len(photos), (
                f"non-pets passed as pets (threshold {threshold}): {passed}"
            )
