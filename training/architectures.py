"""Model definitions. Every model takes float32 pixels 0..255 [N, S, S, 3] and returns P(dog).

Pixel scaling and augmentation are layers inside the model: the exported SavedModel then needs
nothing but raw RGB pixels, and augmentation switches itself off at inference (training=False).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
from keras import layers

from training.errors import ConfigError

SCRATCH_ARCHITECTURES: tuple[str, ...] = ("scratch-cnn", "small-cnn")
TRANSFER_ARCHITECTURES: tuple[str, ...] = ("mobilenet_v2", "efficientnet_v2_b0")
ARCHITECTURES: tuple[str, ...] = SCRATCH_ARCHITECTURES + TRANSFER_ARCHITECTURES

BACKBONE_LAYER_NAME = "backbone"

PREPROCESSING: dict[str, str] = {
    "small-cnn": "float pixels 0..255 scaled by 1/255 inside the model",
    "scratch-cnn": "float pixels 0..255 scaled by 1/255 inside the model",
    "mobilenet_v2": "float pixels 0..255 scaled to -1..1 (x/127.5 - 1) inside the model",
    "efficientnet_v2_b0": "float pixels 0..255; EfficientNetV2 built-in preprocessing "
    "(x/255, ImageNet mean/std normalization) inside the model",
}


@dataclass(frozen=True)
class BuiltModel:
    model: Any  # keras.Model
    # The pretrained part, for freezing/unfreezing; None for models trained from scratch.
    backbone: Any | None


def check_architecture(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")


def augmentation(seed: int) -> Any:
    """Random geometry/colour changes on 0..255 pixels; inactive when training=False."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.1, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom(0.2, fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
            layers.RandomContrast(0.2, value_range=(0, 255), seed=seed + 4),
        ],
        name="augmentation",
    )


def _inputs_and_augment(image_size: int, augment: bool, seed: int) -> tuple[Any, Any]:
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="pixels")
    x = augmentation(seed)(inputs) if augment else inputs
    return inputs, x


def small_cnn(image_size: int, augment: bool, seed: int) -> BuiltModel:
    """The Keras "very little data" baseline (three conv blocks and a dense head)."""
    inputs, x = _inputs_and_augment(image_size, augment, seed)
    x = layers.Rescaling(1.0 / 255)(x)
    for filters in (32, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(0.5, seed=seed)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_dog")(x)
    return BuiltModel(keras.Model(inputs, outputs, name="small_cnn"), None)


def scratch_cnn(image_size: int, augment: bool, seed: int) -> BuiltModel:
    """Separable-conv network with residual shortcuts, trained from scratch.

    Shaped like the Keras "image classification from scratch" example: a strided stem, then per
    width two SeparableConv+BN+ReLU and a stride-2 max pool, with a 1x1 strided conv shortcut
    around each block (cheap, and it makes the deeper stack train faster and more stably).
    """
    inputs, x = _inputs_and_augment(image_size, augment, seed)
    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for width in (32, 64, 128, 256):
        shortcut = x
        for _ in range(2):
            x = layers.SeparableConv2D(width, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        shortcut = layers.Conv2D(width, 1, strides=2, padding="same", use_bias=False)(shortcut)
        x = layers.add([x, shortcut])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3, seed=seed)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_dog")(x)
    return BuiltModel(keras.Model(inputs, outputs, name="scratch_cnn"), None)


def make_backbone(arch: str, image_size: int, weights: str | None) -> Any:
    """The keras.applications backbone without its top, global-average pooled.

    `weights` is a file path or None (random init, for tests); never "imagenet": downloads are
    handled by `training.weights` so they can time out and fail with a useful message.
    """
    shape = (image_size, image_size, 3)
    if arch == "mobilenet_v2":
        return keras.applications.MobileNetV2(
            input_shape=shape, include_top=False, weights=weights, pooling="avg"
        )
    if arch == "efficientnet_v2_b0":
        return keras.applications.EfficientNetV2B0(
            input_shape=shape, include_top=False, weights=weights, pooling="avg", include_preprocessing=True
        )
    known = ", ".join(TRANSFER_ARCHITECTURES)
    raise ConfigError(f"{arch!r} is not a transfer-learning architecture ({known})")


def transfer_model(arch: str, image_size: int, augment: bool, seed: int, weights: str | None) -> BuiltModel:
    """Frozen pretrained backbone + dropout + sigmoid head (phase 1 of transfer learning)."""
    inputs, x = _inputs_and_augment(image_size, augment, seed)
    if arch == "mobilenet_v2":
        # keras.applications.mobilenet_v2.preprocess_input, as a layer: 0..255 -> -1..1.
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")(x)
    backbone = make_backbone(arch, image_size, weights)
    backbone.name = BACKBONE_LAYER_NAME
    backbone.trainable = False
    # training=False keeps BatchNorm in inference mode even after the backbone is unfrozen for
    # fine-tuning: updating its statistics from small batches would wreck the pretrained features.
    x = backbone(x, training=False)
    x = layers.Dropout(0.2, seed=seed)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_dog")(x)
    return BuiltModel(keras.Model(inputs, outputs, name=arch), backbone)


def build_model(
    arch: str, image_size: int, *, weights: str | None = None, augment: bool = True, seed: int = 42
) -> BuiltModel:
    """Build `arch` for `image_size` px inputs. `weights` (a file) only applies to transfer backbones."""
    check_architecture(arch)
    if arch == "small-cnn":
        return small_cnn(image_size, augment, seed)
    if arch == "scratch-cnn":
        return scratch_cnn(image_size, augment, seed)
    return transfer_model(arch, image_size, augment, seed, weights)


def unfreeze_top(backbone: Any, fraction: float = 0.3) -> int:
    """Make the top `fraction` of the backbone's layers trainable, BatchNorm excepted.

    Returns the number of layers unfrozen. BatchNorm layers stay frozen (and run in inference mode,
    see `transfer_model`) so fine-tuning adjusts the convolutions, not the normalization statistics.
    """
    backbone.trainable = True
    all_layers = backbone.layers
    first = int(len(all_layers) * (1.0 - fraction))
    unfrozen = 0
    for index, layer in enumerate(all_layers):
        trainable = index >= first and not isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += int(trainable)
    return unfrozen
