"""The one way to load an exported model, used by the service and by `training evaluate`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catdog.contract import (
    METADATA_FILE,
    PET_SCORE,
    PROBABILITIES,
    SAVED_MODEL_FILE,
    SIGNATURE_INPUT,
    SIGNATURE_NAME,
    MetadataError,
    ModelMetadata,
    read_metadata,
)


class ModelLoadError(RuntimeError):
    """The model directory is missing or does not hold a usable export."""


def model_exists(model_dir: Path) -> bool:
    model_dir = Path(model_dir)
    return (model_dir / SAVED_MODEL_FILE).is_file() and (model_dir / METADATA_FILE).is_file()


@dataclass(frozen=True)
class ModelOutputs:
    probabilities: np.ndarray  # float64 [N, len(class_names)]
    pet_score: np.ndarray | None  # float64 [N]; None when the model has no such output


@dataclass(frozen=True)
class ExportedModel:
    """A loaded export: `predict` maps a uint8 batch [N, H, W, 3] to its outputs."""

    signature: Any
    # The signature's variables belong to this object; dropping it would free them under us.
    saved_model: Any
    metadata: ModelMetadata
    model_dir: Path
    load_seconds: float = 0.0

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.class_names)

    @property
    def image_size(self) -> int:
        return self.metadata.image_size

    @property
    def version(self) -> str:
        return self.metadata.version

    def predict(self, images: np.ndarray) -> ModelOutputs:
        import tensorflow as tf

        outputs = self.signature(**{SIGNATURE_INPUT: tf.constant(images, dtype=tf.uint8)})
        probabilities = np.asarray(outputs[PROBABILITIES].numpy(), dtype=np.float64)
        if probabilities.shape != (len(images), len(self.class_names)):
            raise RuntimeError(f"model returned shape {probabilities.shape} for a batch of {len(images)}")
        pet_score = None
        if self.metadata.has_pet_score:  # what metadata.json declares, not whatever the graph returns
            pet_score = np.asarray(outputs[PET_SCORE].numpy(), dtype=np.float64).reshape(len(images))
        return ModelOutputs(probabilities, pet_score)


def load_exported_model(model_dir: Path | str) -> ExportedModel:
    """Read and validate metadata.json, then load the SavedModel; ModelLoadError says what is wrong."""
    model_dir = Path(model_dir)
    if not model_exists(model_dir):
        raise ModelLoadError(
            f"no exported model at {model_dir} (expected {SAVED_MODEL_FILE} and {METADATA_FILE}); "
            "train one with `python -m training train --data-dir <photos> --output <dir>` "
            "or point CATDOG_MODEL_DIR at an exported model"
        )
    try:
        metadata = read_metadata(model_dir)
    except MetadataError as exc:
        raise ModelLoadError(str(exc)) from exc

    import tensorflow as tf  # imported late: it takes seconds, and only loading a model needs it

    started = time.perf_counter()
    try:
        loaded = tf.saved_model.load(str(model_dir))
        signature = loaded.signatures[SIGNATURE_NAME]
    except Exception as exc:  # a corrupt export raises anything from OSError to IndexError
        # TensorFlow's messages can span lines; an operator gets one.
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ModelLoadError(f"cannot load the SavedModel at {model_dir}: {detail}") from exc
    outputs = set(signature.structured_outputs)
    if PROBABILITIES not in outputs or (metadata.has_pet_score and PET_SCORE not in outputs):
        raise ModelLoadError(
            f"the SavedModel at {model_dir} returns {sorted(outputs)}, "
            f"metadata.json promises {metadata.outputs}"
        )
    return ExportedModel(signature, loaded, metadata, model_dir, time.perf_counter() - started)
