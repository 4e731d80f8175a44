"""Serving's policy on top of a loaded export: per-image answers within bounds, and warm-up.

The loaded model itself, with the pet-score threshold it is served with, is
`catdog.saved_model.ExportedModel` (shared with training); this module only says how the service
turns its outputs into answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from catdog.saved_model import ExportedModel

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


def scores(model: ExportedModel, images: np.ndarray) -> list[ImageScores]:
    """uint8 batch [N, H, W, 3] -> N answers, in order (the batcher's `predict`)."""
    outputs = model.predict(images)
    has_pet_score = model.metadata.has_pet_score
    # Only what metadata.json declares is served, so pet_score and is_cat_or_dog are null together.
    pet_scores = outputs.pet_score if has_pet_score else None
    if has_pet_score and pet_scores is None:
        raise RuntimeError("the model declares a pet_score output but returned none")
    probabilities = bounded(outputs.probabilities)
    pet_scores = None if pet_scores is None else bounded(pet_scores)
    return [
        ImageScores(row, None if pet_scores is None else float(pet_scores[index]))
        for index, row in enumerate(probabilities)
    ]


def warm_up(model: ExportedModel, batch_sizes: tuple[int, ...] = (1,)) -> float:
    """Run the graph once per batch size so the first real request does not pay for tracing."""
    started = time.perf_counter()
    size = model.metadata.image_size
    for count in batch_sizes:
        scores(model, np.zeros((count, size, size, 3), dtype=np.uint8))
    return time.perf_counter() - started
