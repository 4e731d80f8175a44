"""Honest answers: no protocol ever answers a probability or score of exactly 0 or 1, and the committed
model's derived models keep its pet threshold. (Every runtime giving the same photo the same label and
the same pet flag, on all the validation photos: tests/system/test_honest_answers_real_photos.py.)"""

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
from tests.conftest import DEFAULT_MODEL_DIR, TINY_IMAGE_SIZE
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
