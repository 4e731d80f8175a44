"""Honest answers: no protocol ever answers a probability or score of exactly 0 or 1, and every runtime
that may serve the committed model gives the same photo the same label and the same pet flag."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from app.main import create_app
from app.model import MARGIN
from app.settings import Settings
from tests.conftest import DATA_DIR, DEFAULT_MODEL_DIR, TINY_IMAGE_SIZE
from tests.images import solid
from tests.servers import uvicorn_in_thread

# Red (a cat), blue (a dog), white (a pet) and black (not a pet) to a model whose answers, in float32,
# are exactly 0 or 1 (and 0.5 for the cat/dog split of white and black).
COLOURS = ((255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0))


@pytest.fixture(scope="module")
def certain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export whose sigmoids saturate: P(dog) = sigmoid(400 (blue - red)), pet_score =
    sigmoid(400 (brightness - 0.25)); float32 rounds them to exactly 0.0 or 1.0."""
    import keras

    from training.export import export_saved_model

    inputs = keras.Input((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    p_dog = keras.layers.Dense(1, activation="sigmoid", name="p_dog")(x)
    pet = keras.layers.Dense(1, activation="sigmoid", name="pet")(x)
    model = keras.Model(inputs, [p_dog, pet])
    model.get_layer("p_dog").set_weights([np.array([[-400.0], [0.0], [400.0]]), np.array([0.0])])
    model.get_layer("pet").set_weights([np.full((3, 1), 400.0 / 3), np.array([-100.0])])
    out = tmp_path_factory.mktemp("models") / "certain"
    export_saved_model(
        model,
        out,
        TINY_IMAGE_SIZE,
        {
            "class_names": ["cat", "dog"],
            "version": "certain-1",
            "architecture": "saturating-test-model",
            "outputs": ["probabilities", "pet_score"],
            "ood": {"threshold": 0.5, "method": "test"},
        },
    )
    return out


@pytest.fixture(scope="module")
def certain_server(certain_model_dir: Path) -> Iterator[str]:
    settings = Settings(model_dir=certain_model_dir, auto_train=False)
    with uvicorn_in_thread(create_app(settings)) as base_url:
        yield base_url


def _numbers(value: Any) -> list[float]:
    """Every probability or score in an answer (booleans, labels and timings left out)."""
    if isinstance(value, dict):
        keys = ("probabilities", "confidence", "pet_score", "predictions", "outputs")
        return [n for key, item in value.items() if key in keys for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    if isinstance(value, float | int) and not isinstance(value, bool):
        return [float(value)]
    return []


def _assert_never_certain(numbers: list[float]) -> None:
    assert numbers, "no probabilities in the answer"
    assert all(MARGIN <= n <= 1 - MARGIN for n in numbers), numbers
    assert 1 - MARGIN in numbers and MARGIN in numbers, "the saturating model's answers reach both bounds"


def test_the_model_itself_answers_exactly_0_and_1(certain_model_dir: Path) -> None:
    """What the service receives from this model: the clipping below is what keeps it honest."""
    from catdog.saved_model import load_exported_model

    images = np.stack([np.full((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), c, dtype=np.uint8) for c in COLOURS])
    outputs = load_exported_model(certain_model_dir).predict(images)
    assert {0.0, 1.0} <= set(outputs.probabilities.ravel().tolist())
    assert outputs.pet_score is not None and set(outputs.pet_score.tolist()) == {0.0, 1.0}


def test_predict_and_batch_never_answer_certainty(certain_server: str) -> None:
    import httpx

    answers = [
        httpx.post(f"{certain_server}/predict", files={"file": ("x.png", solid(c), "image/png")}).json()
        for c in COLOURS
    ]
    _assert_never_certain(_numbers(answers))
    assert answers[0]["probabilities"] == {"cat": 0.999999, "dog": 1e-06}
    assert answers[0]["confidence"] == 0.999999
    files = [("files", (f"{i}.png", solid(c), "image/png")) for i, c in enumerate(COLOURS)]
    batch = httpx.post(f"{certain_server}/predict/batch", files=files).json()
    _assert_never_certain(_numbers(batch))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_never_answers_certainty(certain_server: str, binary: bool) -> None:
    with triton.InferenceServerClient(certain_server.removeprefix("http://")) as client:
        tensor = triton.InferInput("image", [len(COLOURS)], "BYTES")
        images = [solid(c) if binary else base64.b64encode(solid(c)).decode() for c in COLOURS]
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
        wanted = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "pet_score")]
        result = client.infer("catdog", [tensor], outputs=wanted)
    probabilities, scores = result.as_numpy("probabilities"), result.as_numpy("pet_score")
    assert probabilities is not None and scores is not None
    numbers = [*probabilities.ravel().tolist(), *scores.ravel().tolist()]
    # FP32 on the wire: the bounds as float32 numbers, still strictly inside (0, 1).
    assert all(0.0 < n < 1.0 for n in numbers), numbers
    assert float(np.float32(1 - MARGIN)) in numbers and float(np.float32(MARGIN)) in numbers


def test_tf_serving_never_answers_certainty(
    make_client: Callable[..., TestClient], certain_model_dir: Path
) -> None:
    client = make_client(model_dir=certain_model_dir)
    instances = [{"b64": base64.b64encode(solid(c)).decode()} for c in COLOURS]
    row = client.post("/v1/models/catdog:predict", json={"instances": instances}).json()
    columnar = client.post("/v1/models/catdog:predict", json={"inputs": instances}).json()
    _assert_never_certain(_numbers(row))
    _assert_never_certain(_numbers(columnar))


# ------------------------------------------------------------------- one answer per model version


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
    from app.model import ServedModel
    from catdog.saved_model import load_exported_model

    model = ServedModel.create(load_exported_model(DEFAULT_MODEL_DIR, runtime), None)
    scores = [s for start in range(0, len(images), 32) for s in model.predict(images[start : start + 32])]
    p_cat = np.array([s.probabilities[0] for s in scores])
    flagged = np.array(
        [s.pet_score is not None and s.pet_score < (model.pet_threshold or 0.0) for s in scores]
    )
    return p_cat, flagged, model.pet_threshold


def _servable_runtimes() -> list[str]:
    """Every derived model of the committed model that auto or CATDOG_RUNTIME may serve here."""
    from catdog.contract import read_metadata
    from catdog.runtimes import usable_derived

    metadata = read_metadata(DEFAULT_MODEL_DIR)
    return [entry.key for entry, why in usable_derived(metadata, DEFAULT_MODEL_DIR) if not why]


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_derived_threshold_keeps_the_rank_of_the_savedmodels() -> None:
    """training/derive.py: a model scoring like the SavedModel gets its threshold back exactly (not a
    value elsewhere between the same two fitted photos), and a shifted model a shifted threshold."""
    from training.derive import own_threshold

    scores = np.random.default_rng(0).uniform(0.3, 0.9, 3000)
    threshold = float(np.quantile(scores, 0.0025))
    assert own_threshold(scores, scores, threshold) == pytest.approx(threshold, abs=1e-12)
    between = float(np.sort(scores)[7] * 0.3 + np.sort(scores)[8] * 0.7)  # not a quantile of 0.0025
    assert own_threshold(scores, scores, between) == pytest.approx(between, abs=1e-12)
    assert own_threshold(scores + 0.01, scores, threshold) == pytest.approx(threshold + 0.01, abs=1e-12)
    assert own_threshold(scores + 0.01, scores, 0.1) == 0.1  # below every fitted photo: nothing to match


def test_the_shipped_float_models_flag_at_the_savedmodels_threshold() -> None:
    """The committed model's fp32 derived models score like TensorFlow (within 1e-5), so their pet
    thresholds match TensorFlow's: the CPU image (LiteRT) and the GPU image (TensorFlow) flag the
    same photos, not only the same fitted ones."""
    from catdog.contract import read_metadata

    metadata = read_metadata(DEFAULT_MODEL_DIR)
    assert metadata.ood is not None
    floats = [entry for entry in metadata.derived if entry.precision == "fp32" and entry.passed]
    assert floats
    for entry in floats:
        assert entry.ood_threshold == pytest.approx(metadata.ood.threshold, abs=1e-4), entry.key
