"""Backbone members and their pooled features: what the pretrained recipe and `select` build on.

A member is an ImageNet EfficientNet-Lite backbone run at a chosen input size ("efficientnet_lite2@340"):
the networks are fully convolutional, and these features are better at a somewhat larger input than the
backbone was trained at (the train-test resolution discrepancy: objects look larger in training crops).
The model's input is the largest member's size; smaller members get the image resized in the graph.

Features go to the head through `transform`: "sqrt" (the square root of each pooled activation, a power
normalization that evens out their skewed distribution; cross-validated log loss 0.0100 -> 0.0089 for
Lite2 at 340 px) or "linear".
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training.backbones.efficientnet_lite import build_efficientnet_lite, get_variant
from training.backbones.packaged import WeightsSource, load_backbone
from training.errors import ConfigError

logger = logging.getLogger("catdog.training.features")

TRANSFORMS = ("sqrt", "linear")
# sqrt(x + eps): finite gradient at 0, the same function in numpy and in the graph.
SQRT_EPSILON = 1e-6


def parse_members(arch: str) -> tuple[tuple[str, int], ...]:
    """The (backbone, input size) members of an architecture: "efficientnet_lite0+efficientnet_lite2@340"
    -> (("efficientnet_lite0", 224), ("efficientnet_lite2", 340)); no size: the backbone's own."""
    members = []
    for part in arch.split("+"):
        name, _, size = part.strip().partition("@")
        native = get_variant(name).image_size  # raises ConfigError for an unknown backbone
        try:
            pixels = int(size) if size else native
        except ValueError:
            raise ConfigError(f"bad input size in {part!r}: expected <backbone>@<pixels>") from None
        if not 64 <= pixels <= 1024:
            raise ConfigError(f"{part}: input size must be 64 to 1024 pixels, got {pixels}")
        members.append((name, pixels))
    if len({name for name, _ in members}) != len(members):
        raise ConfigError(f"an ensemble lists each backbone once: {arch}")
    return tuple(members)


def transform(features: np.ndarray, kind: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if kind == "sqrt":
        return np.asarray(np.sqrt(np.maximum(features, 0.0) + SQRT_EPSILON))
    if kind == "linear":
        return features
    raise ConfigError(f"unknown feature transform {kind!r}; choose from {', '.join(TRANSFORMS)}")


class FeatureTransform(layers.Layer):  # type: ignore[misc]
    """`transform` inside the exported graph."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        transform(np.zeros((1, 1), dtype=np.float32), kind)  # validates the kind
        self.kind = kind

    def call(self, features: Any) -> Any:
        if self.kind == "sqrt":
            return keras.ops.sqrt(keras.ops.maximum(features, 0.0) + SQRT_EPSILON)
        return features


@dataclass
class Member:
    """One backbone at its size: pixels at the model's input size -> [pooled features, ImageNet logits]."""

    name: str
    size: int
    source: WeightsSource
    backbone: Any  # keras.Model at `size`
    extractor: Any  # keras.Model: pixels at the model's input size -> [features, logits]
    run: Any = field(repr=False)  # the extractor as one traced tf.function

    @property
    def label(self) -> str:
        return f"{self.name}@{self.size}"


def make_member(name: str, size: int, input_size: int, weights: str | None = None) -> Member:
    native, source = load_backbone(name, weights)
    backbone = native
    if size != get_variant(name).image_size:
        backbone = build_efficientnet_lite(name, size)
        backbone.set_weights(native.get_weights())
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="pixels")
    x = inputs
    if input_size != size:
        x = layers.Resizing(size, size, interpolation="bilinear", antialias=True, name=f"{name}_resize")(x)
    features, logits = backbone(x, training=False)
    extractor = keras.Model(inputs, [features, logits], name=f"{name}_extractor")
    run = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    return Member(name, size, source, backbone, extractor, run)


def progress_bar(total: int, what: str, unit: str = "image") -> Any:
    logger.info("%s: %d %ss", what, total, unit)
    return keras.utils.Progbar(total, verbose=1 if sys.stdout.isatty() else 2, unit_name=unit)


def extract(member: Member, images: np.ndarray, batch_size: int, *, mirror: bool, what: str) -> np.ndarray:
    """Pooled features [N, D] of uint8 images (or of their mirror images)."""
    features = []
    bar = progress_bar(len(images), f"{member.label} features, {what}{' (mirrored)' if mirror else ''}")
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if mirror:
            batch = batch[:, :, ::-1]
        f, _ = member.run(tf.constant(batch, dtype=tf.float32))
        features.append(np.asarray(f, dtype=np.float32))
        bar.update(min(start + batch_size, len(images)))
    return np.concatenate(features)


# ------------------------------------------------------------------------------- cache (for select)


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "catdog" / "features"


def cached_extract(
    member: Member, images: np.ndarray, batch_size: int, *, mirror: bool, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features [N, D], ImageNet logits [N, 1000]) of uint8 images or of their mirror images,
    kept on disk under `cache_dir()` by backbone, size, weights and the exact pixels."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
    key = f"{member.label}-{member.source.sha256[:12]}-{digest}{'-mirrored' if mirror else ''}.npz"
    path = cache_dir() / key
    if path.is_file():
        with np.load(path) as stored:
            return np.asarray(stored["features"]), np.asarray(stored["logits"])
    features, logits = [], []
    bar = progress_bar(len(images), f"{member.label} features, {what}{' (mirrored)' if mirror else ''}")
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        f, lg = member.run(tf.constant(batch[:, :, ::-1] if mirror else batch, dtype=tf.float32))
        features.append(np.asarray(f, dtype=np.float32))
        logits.append(np.asarray(lg, dtype=np.float32))
        bar.update(min(start + batch_size, len(images)))
    found = np.concatenate(features), np.concatenate(logits)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, features=found[0], logits=found[1])
    partial.rename(path)
    return found
