"""The answers a model gave on fixed probe images when it was made, checked again wherever it loads.

A runtime's numbers can depend on the machine: OpenVINO runs float layers in bfloat16 on CPUs with
AVX512-BF16 unless told otherwise, ONNX Runtime's int8 kernels saturate on CPUs without VNNI unless the
weights leave room, TensorFlow uses TF32 matrix units on recent GPUs. The equivalence check that admitted
a model ran on the machine that made it; this makes sure the machine that serves it computes the same.

Training (the SavedModel) and `python -m training derive` (each derived model) record the outputs on
`probe_images`; loading a model runs the same images and refuses a runtime whose answers moved by more
than `catdog.contract.PROBE_TOLERANCE`. The images are integer patterns (stripes, checks, ramps in every
colour), made without random numbers or floating-point maths, so every machine draws the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from catdog.contract import PET_SCORE, PROBABILITIES, ProbeRecord

PROBE_COUNT = 4


class ProbeMismatchError(RuntimeError):
    """The runtime answers the probe images differently here from where the model was checked."""


def probe_images(size: int, count: int = PROBE_COUNT) -> np.ndarray:
    """uint8 [count, size, size, 3]: image k is a pattern of x, y and channel in integer arithmetic."""
    y, x = np.mgrid[0:size, 0:size].astype(np.int64)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for k in range(count):
        for channel in range(3):
            a, b = 3 + 2 * k + channel, 5 + 3 * channel - k
            pattern = (a * x + b * y + 85 * channel) % 256
            if k % 2:  # checks over ramps: edges at several scales
                pattern = np.where(((x // (8 + 4 * k)) + (y // (6 + 2 * k))) % 2 == 1, pattern, 255 - pattern)
            images[k, :, :, channel] = pattern
    return images


def _outputs(raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(raw[name], dtype=np.float64) for name in (PROBABILITIES, PET_SCORE) if name in raw
    }


def _answers(predict: Callable[[np.ndarray], Mapping[str, Any]], images: np.ndarray) -> dict[str, np.ndarray]:
    """The probe images one at a time, the way a lone request goes."""
    parts = [_outputs(predict(images[i : i + 1])) for i in range(len(images))]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def record_probe(predict: Callable[[np.ndarray], Mapping[str, Any]], size: int) -> ProbeRecord:
    """What `predict` (uint8 batch -> named outputs) answers for the probe images."""
    answers = _answers(predict, probe_images(size))
    return ProbeRecord(outputs={name: value.tolist() for name, value in answers.items()})


def check_probe(
    predict: Callable[[np.ndarray], Mapping[str, Any]], record: ProbeRecord, size: int, what: str
) -> float:
    """The largest difference from `record`; ProbeMismatchError if above its tolerance."""
    answers = _answers(predict, probe_images(size, len(next(iter(record.outputs.values())))))
    worst = 0.0
    for name, expected in record.outputs.items():
        if name not in answers:
            raise ProbeMismatchError(f"{what} does not return {name!r}, which was recorded")
        worst = max(worst, float(np.max(np.abs(answers[name] - np.asarray(expected, dtype=np.float64)))))
    if worst > record.tolerance:
        raise ProbeMismatchError(
            f"{what} answers the probe images differently on this machine than where it was checked "
            f"(max difference {worst:.2e} > {record.tolerance:.0e}): this CPU or library computes "
            "in another precision"
        )
    return worst
