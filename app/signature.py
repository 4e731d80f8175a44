"""The served model's signature, declared once: its inputs and outputs with dtypes and shapes, and the
per-image answers as output columns. Every front's metadata and tensors derive from it (KServe V2 and
TF Serving name dtypes their own way; `V2_DTYPES` and `TF_DTYPES` translate).

Inputs are one of two kinds: encoded images (JPEG, PNG, ... bytes) or RGB pixels the caller decoded,
any size. Outputs: the class probabilities in `class_names` order and the label, and for models with
a pet head the pet score and the flag. Fronts name the inputs in their own protocol's words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class DType(Enum):
    FLOAT32 = "float32"
    STRING = "string"  # bytes or text
    BOOL = "bool"
    UINT8 = "uint8"


V2_DTYPES = {DType.FLOAT32: "FP32", DType.STRING: "BYTES", DType.BOOL: "BOOL", DType.UINT8: "UINT8"}
TF_DTYPES = {
    DType.FLOAT32: "DT_FLOAT",
    DType.STRING: "DT_STRING",
    DType.BOOL: "DT_BOOL",
    DType.UINT8: "DT_UINT8",
}


class InputKind(Enum):
    ENCODED = "encoded"  # encoded images, one string each
    PIXELS = "pixels"  # uint8 [N, H, W, 3]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: DType
    shape: tuple[int, ...]  # -1: any size


INPUTS = {
    InputKind.ENCODED: TensorSpec("encoded", DType.STRING, (-1,)),
    InputKind.PIXELS: TensorSpec("pixels", DType.UINT8, (-1, -1, -1, 3)),
}


def outputs(class_count: int, has_pet_score: bool) -> list[TensorSpec]:
    """The outputs a model answers, in the order fronts list them."""
    declared = [
        TensorSpec("probabilities", DType.FLOAT32, (-1, class_count)),
        TensorSpec("label", DType.STRING, (-1,)),
    ]
    if has_pet_score:
        declared += [
            TensorSpec("pet_score", DType.FLOAT32, (-1,)),
            TensorSpec("is_cat_or_dog", DType.BOOL, (-1,)),
        ]
    return declared


@dataclass(frozen=True)
class ImageAnswer:
    """One image's answer, as every front reports it (values rounded to the 6 decimals answers carry)."""

    label: str
    confidence: float
    probabilities: tuple[float, ...]  # class_names order
    pet_score: float | None
    is_cat_or_dog: bool | None

    def output(self, name: str) -> Any:
        """This image's row of output `name` (JSON-ready: the probabilities as a list)."""
        value = getattr(self, name)
        return list(value) if isinstance(value, tuple) else value


def columns(answers: Sequence[ImageAnswer], specs: Sequence[TensorSpec]) -> dict[str, list[Any]]:
    """The answers as one column per output: {"probabilities": [[p_cat, p_dog], ...], "label": [...]}."""
    return {spec.name: [answer.output(spec.name) for answer in answers] for spec in specs}
