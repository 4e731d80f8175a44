"""The one way to load an exported model, used by the service and by `training evaluate`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catdog.contract import (
    METADATA_FILE,
    PET_SCORE,
    PROBABILITIES,
    SAVED_MODEL_FILE,
    SIGNATURE_INPUT,
    SIGNATURE_NAME,
    DerivedModel,
    MetadataError,
    ModelMetadata,
    ProbeRecord,
    read_metadata,
)
from catdog.probe import ProbeMismatchError, check_probe
from catdog.runtimes import (
    AUTO,
    TENSORFLOW,
    Runner,
    RuntimeUnavailableError,
    choose_derived,
    load_runner,
    outputs_of,
    runtime_threads,
)

# Cut-off for a model that has a pet_score but records no threshold, when none is configured.
DEFAULT_PET_THRESHOLD = 0.5


class ModelLoadError(RuntimeError):
    """The model directory is missing or does not hold a usable export."""


def model_exists(model_dir: Path) -> bool:
    model_dir = Path(model_dir)
    return (model_dir / SAVED_MODEL_FILE).is_file() and (model_dir / METADATA_FILE).is_file()


@dataclass(frozen=True)
class ModelOutputs:
    probabilities: np.ndarray  # float64 [N, len(class_names)]
    pet_score: np.ndarray | None  # float64 [N]; None when the model has no such output


class TensorFlowRunner:
    """The SavedModel's serving signature (any image size: the graph resizes)."""

    runtime = TENSORFLOW
    precision = "fp32"

    def __init__(self, signature: Any, saved_model: Any) -> None:
        self.signature = signature
        # The signature's variables belong to this object; dropping it would free them under us.
        self.saved_model = saved_model

    def __call__(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        import tensorflow as tf

        outputs = self.signature(**{SIGNATURE_INPUT: tf.constant(images, dtype=tf.uint8)})
        return {name: value.numpy() for name, value in outputs.items()}


@dataclass(frozen=True)
class ExportedModel:
    """A loaded export: `predict` maps a uint8 batch [N, H, W, 3] to its outputs.

    `runner` is the SavedModel's signature in TensorFlow, or a model derived from it for another CPU
    runtime (catdog/runtimes.py); `runtime_reason` says why that one was chosen. `pet_threshold` is the
    pet-score cut-off it is served with, resolved once from `configured_pet_threshold` and the metadata
    (`effective_pet_threshold`), so a model and its threshold cannot be paired wrongly.
    """

    runner: Runner
    metadata: ModelMetadata
    model_dir: Path
    load_seconds: float = 0.0
    runtime_reason: str = ""
    derived: DerivedModel | None = None
    configured_pet_threshold: InitVar[float | None] = None
    # None and "no pet_score output" exactly when the model has no pet_score: nothing to compare.
    pet_threshold: float | None = field(init=False)
    pet_threshold_source: str = field(init=False)

    def __post_init__(self, configured_pet_threshold: float | None) -> None:
        threshold, source = effective_pet_threshold(self.metadata, configured_pet_threshold, self.derived)
        object.__setattr__(self, "pet_threshold", threshold)
        object.__setattr__(self, "pet_threshold_source", source)

    @property
    def runtime_name(self) -> str:
        """What runs the model, and in which precision: `litert-int8`, `tensorflow-fp32`, ... (the
        `runtime` that /readyz, /metadata and the logs report)."""
        return f"{self.runner.runtime}-{self.runner.precision}"

    def predict(self, images: np.ndarray) -> ModelOutputs:
        # Only what metadata.json declares is served, not whatever the graph returns.
        probabilities, pet_score = outputs_of(self.runner(images), len(images), self.metadata.has_pet_score)
        return ModelOutputs(probabilities, pet_score)


def effective_pet_threshold(
    metadata: ModelMetadata, configured: float | None, derived: DerivedModel | None = None
) -> tuple[float | None, str]:
    """(threshold, where it came from): CATDOG_PET_THRESHOLD if set; else, for a derived model, the
    threshold calibrated on its own scores (`ood_threshold` of its `derived` entry); else the threshold
    the SavedModel was exported with (`metadata.ood.threshold`); else 0.5.

    (None, "no pet_score output") when the model has no pet_score: there is nothing to compare.
    """
    if not metadata.has_pet_score:
        return None, "no pet_score output"
    if configured is not None:
        return configured, "CATDOG_PET_THRESHOLD"
    if derived is not None and derived.ood_threshold is not None:
        return derived.ood_threshold, f"metadata.derived[{derived.key}].ood_threshold"
    if metadata.ood is not None:
        return metadata.ood.threshold, "metadata.ood.threshold"
    return DEFAULT_PET_THRESHOLD, "default"


def load_exported_model(
    model_dir: Path | str, runtime: str = TENSORFLOW, pet_threshold: float | None = None
) -> ExportedModel:
    """Read and validate metadata.json, then load the model in `runtime`; ModelLoadError says what is wrong.

    `runtime`: "tensorflow" (the SavedModel), "auto" (the fastest derived model that passed its
    equivalence check and can be loaded here, else TensorFlow) or a runtime name from
    `catdog.runtimes.RUNTIMES` (its derived model, or ModelLoadError). `pet_threshold`: the configured
    pet-score cut-off (CATDOG_PET_THRESHOLD), None for the one the model records.
    """
    model_dir = Path(model_dir)
    if not model_exists(model_dir):
        raise ModelLoadError(
            f"no exported model at {model_dir} (expected {SAVED_MODEL_FILE} and {METADATA_FILE}); "
            "train one with `python -m training train --data-dir <photos> --output <dir>` "
            "or point CATDOG_MODEL_DIR at an exported model"
        )
    try:
        metadata = read_metadata(model_dir)
    except MetadataError as exc:
        raise ModelLoadError(str(exc)) from exc

    started = time.perf_counter()
    try:
        entry, reason = choose_derived(metadata, model_dir, runtime)
        if entry is not None:
            runner = load_runner(entry, model_dir, metadata.image_size)
            _check_probe(runner, entry.probe, metadata.image_size, entry.key)
            seconds = time.perf_counter() - started
            return ExportedModel(runner, metadata, model_dir, seconds, reason, entry, pet_threshold)
    except RuntimeUnavailableError as exc:
        if runtime != AUTO:
            raise ModelLoadError(str(exc)) from exc
        reason = f"{exc}; using TensorFlow"
    model = _load_tensorflow(model_dir, metadata, started, reason, pet_threshold)
    try:
        _check_probe(model.runner, metadata.probe, metadata.image_size, "the SavedModel in TensorFlow")
    except RuntimeUnavailableError as exc:
        raise ModelLoadError(str(exc)) from exc
    return model


def _check_probe(runner: Runner, record: ProbeRecord | None, size: int, what: str) -> None:
    """The runner must answer the probe images as it did where it was checked (catdog/probe.py)."""
    if record is None:  # exported before probes were recorded
        return
    try:
        check_probe(runner, record, size, what)
    except ProbeMismatchError as exc:
        raise RuntimeUnavailableError(str(exc)) from exc


def _configure_tensorflow(tf: Any) -> None:
    """Intra-op threads = `runtime_threads()` (the CPUs we may use), inter-op at most 2: one graph runs
    at a time. Only possible before TensorFlow's first op; a process that already ran one keeps its own.
    Float32 pinned on GPUs too."""
    try:
        threads = runtime_threads()
    except RuntimeUnavailableError as exc:
        raise ModelLoadError(str(exc)) from exc
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass
    # float32 means float32 on every device: on Ampere and newer GPUs TensorFlow would otherwise run
    # matrix products and convolutions in TF32 (10-bit mantissa), away from what the CPU answers.
    tf.config.experimental.enable_tensor_float_32_execution(False)


def _load_tensorflow(
    model_dir: Path, metadata: ModelMetadata, started: float, reason: str, pet_threshold: float | None
) -> ExportedModel:
    import tensorflow as tf  # imported late: it takes seconds, and only loading a model needs it

    _configure_tensorflow(tf)
    try:
        loaded = tf.saved_model.load(str(model_dir))
        signature = loaded.signatures[SIGNATURE_NAME]
    except Exception as exc:  # a corrupt export raises anything from OSError to IndexError
        # TensorFlow's messages can span lines; an operator gets one.
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ModelLoadError(f"cannot load the SavedModel at {model_dir}: {detail}") from exc
    outputs = set(signature.structured_outputs)
    if PROBABILITIES not in outputs or (metadata.has_pet_score and PET_SCORE not in outputs):
        raise ModelLoadError(
            f"the SavedModel at {model_dir} returns {sorted(outputs)}, "
            f"metadata.json promises {metadata.outputs}"
        )
    runner = TensorFlowRunner(signature, loaded)
    seconds = time.perf_counter() - started
    return ExportedModel(runner, metadata, model_dir, seconds, reason, configured_pet_threshold=pet_threshold)
