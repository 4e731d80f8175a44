"""Shared fixtures: a tiny deterministic model exported once per session, and app clients."""

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


@pytest.fixture
def make_client(tiny_model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Build a started app (lifespan run) with settings overrides; closed after the test."""
    from app.main import create_app
    from app.settings import Settings

    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        settings = Settings(model_dir=tiny_model_dir, auto_train=False, **overrides)
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
