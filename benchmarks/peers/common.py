"""What every peer app shares: the model, the decoding and the answer's shape (catdog's fields)."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import numpy as np

from catdog.imaging import load_model_input
from catdog.saved_model import ExportedModel, ModelOutputs, load_exported_model

MAX_PIXELS = 40_000_000


def load_model() -> ExportedModel:
    """The model in PEER_MODEL_DIR (default model/default), in PEER_RUNTIME (default auto)."""
    model_dir = os.environ.get("PEER_MODEL_DIR", "model/default")
    model = load_exported_model(model_dir, os.environ.get("PEER_RUNTIME", "auto"))
    # Warm up at batch 1 and 16, like catdog does before it takes requests.
    side = model.metadata.image_size
    for size in (1, 16):
        model.predict(np.zeros((size, side, side, 3), dtype=np.uint8))
    return model


def decode(model: ExportedModel, data: bytes) -> np.ndarray:
    return load_model_input(data, model.metadata.image_size, MAX_PIXELS)


def answers(model: ExportedModel, outputs: ModelOutputs) -> list[dict[str, Any]]:
    result = []
    for index, row in enumerate(outputs.probabilities):
        probabilities = {name: float(p) for name, p in zip(model.metadata.class_names, row, strict=True)}
        pet = None if outputs.pet_score is None else float(outputs.pet_score[index])
        label = max(probabilities, key=probabilities.__getitem__)
        result.append({"label": label, "probabilities": probabilities, "pet_score": pet})
    return result


def wait_ok(url: str, timeout: float) -> None:
    """Poll GET `url` until it answers 200 (any body: every system has its own readiness format)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")
