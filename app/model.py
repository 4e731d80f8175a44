"""The exported classifier as the service sees it: a SavedModel plus its metadata.json.

The export side of this contract is `training/export.py`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("catdog.model")

METADATA_FILE = "metadata.json"
SAVED_MODEL_FILE = "saved_model.pb"


class ModelLoadError(RuntimeError):
    """The model directory is missing or does not hold a usable export."""


def model_exists(model_dir: Path) -> bool:
    return (model_dir / SAVED_MODEL_FILE).is_file() and (model_dir / METADATA_FILE).is_file()


@dataclass(frozen=True)
class Classifier:
    """A loaded model: `predict` maps a uint8 batch [N, S, S, 3] to probabilities [N, classes]."""

    signature: Any
    # The signature's variables belong to this object; dropping it would free them under us.
    saved_model: Any
    metadata: dict[str, Any]
    model_dir: Path

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        outputs = self.signature(images=tf.constant(images, dtype=tf.uint8))
        probabilities = np.asarray(outputs["probabilities"].numpy(), dtype=np.float64)
        if probabilities.shape != (len(images), len(self.class_names)):
            raise RuntimeError(f"model returned shape {probabilities.shape} for a batch of {len(images)}")
        return probabilities

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run the graph once per batch size so the first real request does not pay for tracing."""
        started = time.perf_counter()
        for size in batch_sizes:
            self.predict(np.zeros((size, self.image_size, self.image_size, 3), dtype=np.uint8))
        return time.perf_counter() - started


def load_classifier(model_dir: Path) -> Classifier:
    model_dir = Path(model_dir)
    if not model_exists(model_dir):
        raise ModelLoadError(
            f"no exported model at {model_dir} (expected {SAVED_MODEL_FILE} and {METADATA_FILE}); "
            "train one with `python -m training train --data-dir <photos> --output <dir>` "
            "or point CATDOG_MODEL_DIR at an exported model"
        )
    try:
        metadata = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {model_dir / METADATA_FILE}: {exc}") from exc
    missing = {"class_names", "image_size", "version"} - set(metadata)
    if missing:
        raise ModelLoadError(f"{model_dir / METADATA_FILE} lacks {sorted(missing)}")

    import tensorflow as tf  # imported late: it takes seconds, and only loading a model needs it

    started = time.perf_counter()
    try:
        loaded = tf.saved_model.load(str(model_dir))
        signature = loaded.signatures["serving_default"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the SavedModel at {model_dir}: {exc}") from exc
    classifier = Classifier(signature=signature, saved_model=loaded, metadata=metadata, model_dir=model_dir)
    logger.info(
        "model loaded",
        extra={
            "model_dir": str(model_dir),
            "version": classifier.version,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return classifier
