""" "Is it a cat or dog at all?": the ImageNet head's probability mass on cat and dog classes.

The backbones were trained on ImageNet-1k, whose classes 281-285 are domestic cats and 151-268
dog breeds. Their summed softmax probability is high for pet photos and near zero for almost
anything else, which makes it a calibrated-enough out-of-distribution score with no extra
training. The threshold is chosen on training photos (a quantile), then measured on validation
pets and on real non-pet photos shipped inside scikit-image and scikit-learn.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import keras
import numpy as np
from keras import layers

from training.backbones.efficientnet_lite import IMAGENET_CAT_CLASSES, IMAGENET_CLASSES, IMAGENET_DOG_CLASSES

logger = logging.getLogger("catdog.training.ood")

METHOD = "sum of ImageNet softmax over cat (281-285) and dog (151-268) classes"
# Real photos with no cat or dog in them (skimage.data's `chelsea`/`cat` is a cat: a positive).
SKIMAGE_NON_PETS = (
    "astronaut", "camera", "coffee", "coins", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "moon", "colorwheel", "page", "text",
)  # fmt: skip
SKIMAGE_PETS = ("chelsea",)


class PetProbability(layers.Layer):  # type: ignore[misc]
    """ImageNet logits [N, 1000] -> P(cat or dog class) [N, 1]."""

    def call(self, logits: Any) -> Any:
        mask = np.zeros((IMAGENET_CLASSES,), dtype=np.float32)
        mask[list(IMAGENET_CAT_CLASSES) + list(IMAGENET_DOG_CLASSES)] = 1.0
        probabilities = keras.ops.softmax(logits, axis=-1)
        return keras.ops.sum(probabilities * keras.ops.convert_to_tensor(mask), axis=-1, keepdims=True)


def choose_threshold(training_scores: np.ndarray, quantile: float) -> float:
    """The score that at most `quantile` of the training pet photos fall below (capped at 0.5)."""
    return float(min(0.5, np.quantile(np.asarray(training_scores, dtype=np.float64), quantile)))


def _encoded(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def reference_photos() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(non-pet photos, pet photos) as PNG bytes, from the packages; empty when they are missing."""
    non_pets: dict[str, bytes] = {}
    pets: dict[str, bytes] = {}
    try:
        import skimage.data

        for name in SKIMAGE_NON_PETS:
            non_pets[f"skimage.data.{name}"] = _encoded(np.asarray(getattr(skimage.data, name)()))
        for name in SKIMAGE_PETS:
            pets[f"skimage.data.{name}"] = _encoded(np.asarray(getattr(skimage.data, name)()))
    except Exception as exc:  # an optional package, or a data file it does not ship
        logger.warning("scikit-image photos unavailable for the OOD check: %s", exc)
    try:
        from sklearn.datasets import load_sample_images

        samples = load_sample_images()
        for file_name, image in zip(samples.filenames, samples.images, strict=True):
            name = file_name.rsplit("/", 1)[-1]
            non_pets[f"sklearn.datasets.{name}"] = _encoded(np.asarray(image))
    except Exception as exc:
        logger.warning("scikit-learn sample images unavailable for the OOD check: %s", exc)
    return non_pets, pets
