"""Export a trained Keras classifier as the SavedModel the service loads (contract: catdog/contract.py).

- The signature takes raw uint8 pixels of any size; resizing and pixel scaling are in the graph,
  so every caller gets the numbers the model was trained for.
- The Keras model returns P(dog) [N, 1] (or [N, 2] probabilities), or a list
  [P(dog), pet_score] where pet_score [N, 1] is the probability that the photo shows a cat or dog
  at all; the signature then also returns `pet_score` [N].
- With `flip_tta` the graph averages each image with its mirror image (test-time augmentation).
- Written with `tf.saved_model.save` of a module that tracks each variable once: Keras 3's
  `ExportArchive` stores every variable twice, doubling the size of the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from catdog.contract import (
    PET_SCORE,
    PROBABILITIES,
    SIGNATURE_INPUT,
    SIGNATURE_NAME,
    ModelMetadata,
    write_metadata,
)
from catdog.probe import record_probe

__all__ = ["build_serving_function", "export_saved_model", "write_metadata"]


def _as_outputs(raw: Any) -> dict[str, tf.Tensor]:
    if isinstance(raw, (list, tuple)):
        scores, pet = raw
        outputs = {PET_SCORE: tf.reshape(tf.cast(pet, tf.float32), [-1])}
    else:
        scores, outputs = raw, {}
    scores = tf.cast(scores, tf.float32)
    if scores.shape[-1] == 1:
        scores = tf.concat([1.0 - scores, scores], axis=-1)
    return {PROBABILITIES: scores, **outputs}


def build_serving_function(model: keras.Model, image_size: int, flip_tta: bool = False) -> Any:
    """uint8 [N, H, W, 3] -> {"probabilities": [N, 2], optionally "pet_score": [N]}.

    `flip_tta`: answer the mean over the image and its left-right mirror. A cat is a cat either way
    round, and averaging two views cancels part of a model's noise; it costs one model call on a
    doubled batch.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=SIGNATURE_INPUT)])  # type: ignore[untyped-decorator]
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Pillow already resized images sent by the service, and resizing to the same size is the
        # identity; the resize is here for every other caller of the SavedModel.
        pixels = tf.image.resize(images, (image_size, image_size), antialias=True)
        if not flip_tta:
            return _as_outputs(model(pixels, training=False))
        count = tf.shape(pixels)[0]
        both = _as_outputs(model(tf.concat([pixels, tf.reverse(pixels, axis=[2])], axis=0), training=False))
        return {name: (value[:count] + value[count:]) / 2.0 for name, value in both.items()}

    return serve


class _ServingModule(tf.Module):  # type: ignore[misc]
    """What gets saved: the variables once, and the serving function that reads them."""

    def __init__(self, model: keras.Model, serve: Any) -> None:
        super().__init__()
        self.model_variables = [variable.value for variable in model.variables]
        self.serve = serve


def export_saved_model(
    model: keras.Model,
    output_dir: Path,
    image_size: int,
    metadata: dict[str, Any],
    flip_tta: bool = False,
) -> Path:
    """Write the SavedModel and metadata.json into `output_dir` (created, contents replaced)."""
    output_dir = Path(output_dir)
    serve = build_serving_function(model, image_size, flip_tta)
    traced = serve.get_concrete_function()
    outputs = sorted(traced.structured_outputs)
    tta = "mean of the image and its horizontal mirror" if flip_tta else "none"
    # Validated before anything is written: a bad metadata dict must not leave a half export.
    validated = ModelMetadata.model_validate(
        {
            **metadata,
            "image_size": image_size,
            "test_time_augmentation": tta,
            "outputs": [PROBABILITIES] + [name for name in outputs if name == PET_SCORE],
        }
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    module = _ServingModule(model, serve)
    tf.saved_model.save(module, str(output_dir), signatures={SIGNATURE_NAME: traced})
    # What this machine answers on the probe images: the service checks its own answers against them.
    probe = record_probe(lambda images: serve(tf.constant(images, dtype=tf.uint8)), image_size)
    write_metadata(output_dir, validated.model_copy(update={"probe": probe}))
    return output_dir
