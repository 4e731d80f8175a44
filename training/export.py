"""Export a trained Keras classifier as the SavedModel the service loads.

The contract with `app/` lives here and in `app/model.py`:
- `<dir>/saved_model.pb` + `variables/`: signature `serving_default` (also callable as `.serve`)
  takes `images`, a uint8 batch [N, H, W, 3] of any H, W, and returns `probabilities`, float32
  [N, len(class_names)], columns in `class_names` order.
- Resizing to the input size and all pixel scaling happen inside the graph, so any caller that
  hands raw RGB pixels gets the numbers the model was trained for.
- With `flip_tta`, the graph also averages the model's answer for each image and its mirror image
  (test-time augmentation): every caller gets it, and `metadata.json` says so.
- `<dir>/metadata.json`: what the model is and how it was made (see `write_metadata`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

METADATA_FILE = "metadata.json"
SIGNATURE_INPUT = "images"
SIGNATURE_OUTPUT = "probabilities"


def build_serving_function(model: keras.Model, image_size: int, flip_tta: bool = False) -> Any:
    """Wrap a model with a sigmoid (1 unit: P(second class)) or softmax head as uint8 -> probabilities.

    `flip_tta`: answer the mean over the image and its left-right mirror. A cat is a cat either way
    round, and averaging two views cancels part of a small model's noise; it costs one model call
    on a doubled batch.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=SIGNATURE_INPUT)])  # type: ignore[untyped-decorator]
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Pillow already resized images sent by the service, and resizing to the same size is the
        # identity; the resize is here for every other caller of the SavedModel.
        pixels = tf.image.resize(images, (image_size, image_size), antialias=True)
        if flip_tta:
            count = tf.shape(pixels)[0]
            both = model(tf.concat([pixels, tf.reverse(pixels, axis=[2])], axis=0), training=False)
            scores = (both[:count] + both[count:]) / 2.0
        else:
            scores = model(pixels, training=False)
        if scores.shape[-1] == 1:
            scores = tf.concat([1.0 - scores, scores], axis=-1)
        return {SIGNATURE_OUTPUT: tf.cast(scores, tf.float32)}

    return serve


def export_saved_model(
    model: keras.Model, output_dir: Path, image_size: int, metadata: dict[str, Any], flip_tta: bool = False
) -> Path:
    """Write the SavedModel and metadata.json into `output_dir` (created, contents replaced)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", build_serving_function(model, image_size, flip_tta))
    archive.write_out(str(output_dir), verbose=False)
    tta = "mean of the image and its horizontal mirror" if flip_tta else "none"
    write_metadata(output_dir, {**metadata, "image_size": image_size, "test_time_augmentation": tta})
    return output_dir


def write_metadata(output_dir: Path, metadata: dict[str, Any]) -> None:
    """metadata.json keys the service relies on: class_names, image_size, version, architecture."""
    missing = {"class_names", "image_size", "version", "architecture"} - metadata.keys()
    if missing:
        raise ValueError(f"metadata lacks required keys: {sorted(missing)}")
    text = json.dumps(metadata, indent=2, sort_keys=True, default=str)
    (Path(output_dir) / METADATA_FILE).write_text(text + "\n", encoding="utf-8")
