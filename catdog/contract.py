"""The export contract: what `training` writes into a model directory and `app` reads from it.

A model directory holds a TensorFlow SavedModel (`saved_model.pb` + `variables/`) and
`metadata.json`. Its `serving_default` signature takes `images`, a uint8 batch [N, H, W, 3] of any
H, W (resizing and pixel scaling happen inside the graph), and returns:
- `probabilities`: float32 [N, len(class_names)], columns in `class_names` order;
- `pet_score` (optional, models with an ImageNet head): float32 [N], the probability that the
  image shows a cat or a dog at all; `metadata.ood.threshold` is the cut-off the model was
  measured with.
"""

from __future__ import annotations

SAVED_MODEL_FILE = "saved_model.pb"
METADATA_FILE = "metadata.json"
SIGNATURE_NAME = "serving_default"
SIGNATURE_INPUT = "images"
PROBABILITIES = "probabilities"
PET_SCORE = "pet_score"
CLASS_NAMES: tuple[str, ...] = ("cat", "dog")
