"""The loaded export as the service uses it: per-image answers, the pet-score threshold, warm-up.

Loading and the export contract itself live in `catdog` (`catdog.saved_model.load_exported_model`,
`catdog.contract`), shared with training; this module only adds what serving needs on top.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from catdog.contract import DerivedModel, ModelMetadata
from catdog.saved_model import ExportedModel

# Cut-off for a model that has a pet_score but records no threshold, when none is configured.
DEFAULT_PET_THRESHOLD = 0.5
# No answer claims certainty: every probability and score is served within [MARGIN, 1 - MARGIN]. A
# float32 softmax reaches exactly 1.0 once two logits are ~17 apart, and a classifier that is ever wrong
# at P = 1 has infinite log loss. 1e-6 is the last digit of the 6-decimal answers, so the bounds survive
# the rounding: 0.999999 and 1e-06.
MARGIN = 1e-6


def bounded(values: np.ndarray) -> np.ndarray:
    """`values` clipped to [MARGIN, 1 - MARGIN]."""
    return np.clip(np.asarray(values, dtype=np.float64), MARGIN, 1.0 - MARGIN)


@dataclass(frozen=True)
class ImageScores:
    """The model's answer for one image."""

    probabilities: np.ndarray  # float64 [len(class_names)], class_names order, within [MARGIN, 1 - MARGIN]
    pet_score: float | None  # how much it looks like a cat or dog photo; None: the model has no such output


def effective_pet_threshold(
    metadata: ModelMetadata, configured: float | None, derived: DerivedModel | None = None
) -> tuple[float | None, str]:
    """(threshold, where it came from): CATDOG_PET_THRESHOLD if set; else, for a derived model, the
    threshold calibrated on its own scores (`ood_threshold` of its `derived` entry); else the threshold
    the SavedModel was exported with (`metadata.ood.threshold`); else 0.5.

    (None, "no pet_score output") when the model has no pet_score: there is nothing to compare.
    """
    if not metadata.has_pet_score:
        return None, "no pet_score output"
    if configured is not None:
        return configured, "CATDOG_PET_THRESHOLD"
    if derived is not None and derived.ood_threshold is not None:
        return derived.ood_threshold, f"metadata.derived[{derived.key}].ood_threshold"
    if metadata.ood is not None:
        return metadata.ood.threshold, "metadata.ood.threshold"
    return DEFAULT_PET_THRESHOLD, "default"


@dataclass(frozen=True)
class ServedModel:
    """An `ExportedModel` plus the pet-score threshold it is served with."""

    exported: ExportedModel
    pet_threshold: float | None  # None exactly when the model has no pet_score output
    pet_threshold_source: str = "no pet_score output"

    @classmethod
    def create(cls, exported: ExportedModel, configured_threshold: float | None) -> ServedModel:
        return cls(
            exported, *effective_pet_threshold(exported.metadata, configured_threshold, exported.derived)
        )

    @property
    def runtime(self) -> str:
        """What runs the model, and in which precision: `litert-int8`, `tensorflow-fp32`, ..."""
        return f"{self.exported.runtime}-{self.exported.precision}"

    @property
    def metadata(self) -> ModelMetadata:
        return self.exported.metadata

    @property
    def class_names(self) -> list[str]:
        return self.exported.class_names

    @property
    def image_size(self) -> int:
        return self.exported.image_size

    @property
    def version(self) -> str:
        return self.exported.version

    @property
    def has_pet_score(self) -> bool:
        return self.pet_threshold is not None

    def predict(self, images: np.ndarray) -> list[ImageScores]:
        """uint8 batch [N, H, W, 3] -> N answers, in order (the batcher's `predict`)."""
        outputs = self.exported.predict(images)
        # Only what metadata.json declares is served, so pet_score and is_cat_or_dog are null together.
        pet_scores = outputs.pet_score if self.has_pet_score else None
        if self.has_pet_score and pet_scores is None:
            raise RuntimeError("the model declares a pet_score output but returned none")
        probabilities = bounded(outputs.probabilities)
        pet_scores = None if pet_scores is None else bounded(pet_scores)
        return [
            ImageScores(row, None if pet_scores is None else float(pet_scores[index]))
            for index, row in enumerate(probabilities)
        ]

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run the graph once per batch size so the first real request does not pay for tracing."""
        started = time.perf_counter()
        for size in batch_sizes:
            self.predict(np.zeros((size, self.image_size, self.image_size, 3), dtype=np.uint8))
        return time.perf_counter() - started
