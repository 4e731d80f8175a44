"""CPU runtimes for the models derived from the SavedModel (`python -m training derive`).

The SavedModel stays the artefact and the contract; `metadata.json` may list derived models beside it
(`ModelMetadata.derived`: runtime, precision, file, sha256, equivalence results, speed measured at
derive time). Each runner here maps a uint8 batch [N, S, S, 3] (S = `metadata.image_size`: derived
models take the size the service already resizes to) to `{"probabilities": [N, 2], "pet_score": [N]}`,
like the SavedModel's signature. The runtimes' packages are optional extras, imported only when a
runner is created: `pip install 'catdog[onnx]'`, `'catdog[openvino]'`, `'catdog[litert]'`.

Threads: each runner uses `runtime_threads()` intra-op threads (CATDOG_RUNTIME_THREADS, else the
container's CPU quota or the CPUs this process may run on: `catdog.cpus`) and no inter-op parallelism
(one graph at a time: the service runs one batch at a time). ONNX Runtime's worker threads do not
spin while idle, so they do not steal the CPU from the event loop that decodes the next requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from catdog.contract import PET_SCORE, PROBABILITIES, SIGNATURE_INPUT, DerivedModel, ModelMetadata
from catdog.cpus import CpuCount, process_cpus

TENSORFLOW = "tensorflow"
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
LITERT = "litert"
RUNTIMES: tuple[str, ...] = (TENSORFLOW, ONNXRUNTIME, OPENVINO, LITERT)
AUTO = "auto"
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
# The Python module each runtime needs, and the pip extra that installs it.
RUNTIME_MODULES = {
    TENSORFLOW: "tensorflow",
    ONNXRUNTIME: "onnxruntime",
    OPENVINO: "openvino",
    LITERT: "ai_edge_litert",
}
RUNTIME_EXTRAS = {
    TENSORFLOW: "catdog",
    ONNXRUNTIME: "catdog[onnx]",
    OPENVINO: "catdog[openvino]",
    LITERT: "catdog[litert]",
}
THREADS_ENV = "CATDOG_RUNTIME_THREADS"
# tensorflow[and-cuda]'s cuDNN wheel: only a GPU install has it (requirements/gpu.lock, the GPU image).
CUDA_WHEEL = "nvidia-cudnn-cu12"
logger = logging.getLogger("catdog.runtimes")


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime cannot be used: package missing, file missing or failed its check."""


class Runner(Protocol):
    """A loaded model in one runtime: uint8 [N, H, W, 3] -> named float arrays."""

    runtime: str
    precision: str

    def __call__(self, images: np.ndarray) -> Mapping[str, np.ndarray]: ...


def runtime_installed(runtime: str) -> bool:
    return importlib.util.find_spec(RUNTIME_MODULES[runtime]) is not None


def runtime_thread_count() -> CpuCount:
    """Intra-op threads for every runtime and where the number comes from: CATDOG_RUNTIME_THREADS,
    else the CPUs this process can keep busy (`catdog.cpus.process_cpus`: the CPU quota first)."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured:
        problem = f"{THREADS_ENV} must be a positive integer, got {configured!r}"
        try:
            value = int(configured)
        except ValueError as exc:
            raise RuntimeUnavailableError(problem) from exc
        if value < 1:
            raise RuntimeUnavailableError(problem)
        return CpuCount(value, THREADS_ENV)
    return process_cpus()


def runtime_threads() -> int:
    return runtime_thread_count().count


def cuda_wheels_installed() -> bool:
    try:
        importlib.metadata.version(CUDA_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def log_tensorflow_device() -> None:
    """In a GPU install, say once which device TensorFlow runs on: without a GPU it still serves, on
    the CPU, and the log says so. Call after TensorFlow has loaded a model (its devices are known)."""
    if not cuda_wheels_installed():
        return
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    if gpus:
        logger.info("TensorFlow runs on the GPU", extra={"gpus": gpus})
    else:
        logger.warning("no GPU found: TensorFlow runs on the CPU")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 in this block to the log instead.

    Used while a model loads (service start-up), when nothing else should be writing."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    logger.info("runtime: %s", line.strip())


def _check_shape(images: np.ndarray, size: int) -> np.ndarray:
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"derived models take uint8 [N, {size}, {size}, 3], got {images.shape}")
    return np.ascontiguousarray(images, dtype=np.uint8)


class OnnxRunner:
    runtime = ONNXRUNTIME

    def __init__(self, path: Path, size: int, precision: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle workers sleep instead of spinning: on a small machine the event loop needs that CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._outputs = [output.name for output in self._session.get_outputs()]
        self._size = size
        self.precision = precision

    def __call__(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        values = self._session.run(self._outputs, {SIGNATURE_INPUT: _check_shape(images, self._size)})
        return dict(zip(self._outputs, values, strict=True))


class OpenVinoRunner:
    """OpenVINO's CPU plugin, its floating-point work pinned to float32.

    Left to itself the plugin picks its inference precision by CPU: bfloat16 where the CPU has
    AVX512-BF16 or AMX, which moves answers by ~1e-2. Float parts of every model (all of an fp32
    model, the float layers of an int8 one) run in float32 here on every CPU; a plugin that does not
    confirm it is refused.
    """

    runtime = OPENVINO

    def __init__(self, path: Path, size: int, precision: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self._compiled = core.compile_model(str(path), "CPU", config)
        effective = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.float_precision = effective.to_string()  # "f32", "bf16", "f16"
        if effective != ov.Type.f32:
            raise RuntimeUnavailableError(
                f"OpenVINO runs float layers in {self.float_precision}, not float32 as asked"
            )
        self._request = self._compiled.create_infer_request()
        self._outputs = {output.any_name: output for output in self._compiled.outputs}
        self._size = size
        self.precision = precision

    def __call__(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        result = self._request.infer({SIGNATURE_INPUT: _check_shape(images, self._size)})
        return {name: np.array(result[output]) for name, output in self._outputs.items()}


class LiteRtRunner:
    """LiteRT (TensorFlow Lite) with its XNNPACK CPU delegate; not thread-safe, hence the lock."""

    runtime = LITERT

    def __init__(self, path: Path, size: int, precision: str, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        # LiteRT's C++ code prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on stderr
        # when it loads a model: caught here and logged, so every line the service writes stays JSON.
        with _native_stderr_to_log():
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self._runner = self._interpreter.get_signature_runner()
            self._runner(**{SIGNATURE_INPUT: np.zeros((1, size, size, 3), dtype=np.uint8)})
        self._lock = threading.Lock()
        self._size = size
        self.precision = precision

    def __call__(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        """One image at a time: the interpreter keeps its batch-1 shape. A new batch size would make
        LiteRT re-plan its tensors and re-apply XNNPACK (tens of ms), and XNNPACK runs a batch of 16
        no faster per image than 16 single images on this kind of CPU (README "Runtimes")."""
        batch = _check_shape(images, self._size)
        parts: dict[str, list[np.ndarray]] = {}
        with self._lock:
            for index in range(len(batch)):
                outputs = self._runner(**{SIGNATURE_INPUT: batch[index : index + 1]})
                for name, value in outputs.items():
                    # Views into the interpreter's buffers: copied before the next call.
                    parts.setdefault(name, []).append(np.array(value))
        return {name: np.concatenate(values) for name, values in parts.items()}


_RUNNERS: dict[str, type[OnnxRunner] | type[OpenVinoRunner] | type[LiteRtRunner]] = {
    ONNXRUNTIME: OnnxRunner,
    OPENVINO: OpenVinoRunner,
    LITERT: LiteRtRunner,
}


def _not_installed(runtime: str) -> str:
    return f"{RUNTIME_MODULES[runtime]} is not installed (pip install '{RUNTIME_EXTRAS[runtime]}')"


def usable_derived(metadata: ModelMetadata, model_dir: Path) -> list[tuple[DerivedModel, str]]:
    """Every derived model with whether it can be used: '' if so, else why not."""
    result = []
    for entry in metadata.derived:
        if not entry.passed:
            reason = f"failed its equivalence check ({entry.reason or 'see metadata.json'})"
        elif entry.runtime not in _RUNNERS:
            reason = f"unknown runtime {entry.runtime!r}"
        elif not runtime_installed(entry.runtime):
            reason = _not_installed(entry.runtime)
        elif not (Path(model_dir) / entry.file).is_file():
            reason = f"{entry.file} is missing (python -m training derive --model {model_dir})"
        else:
            reason = ""
        result.append((entry, reason))
    return result


def runtime_choices() -> list[str]:
    """What CATDOG_RUNTIME accepts: auto, a runtime, or a runtime and precision ("litert-int8")."""
    return [AUTO, *RUNTIMES, *(f"{r}-{p}" for r in _RUNNERS for p in PRECISIONS)]


def choose_derived(metadata: ModelMetadata, model_dir: Path, runtime: str) -> tuple[DerivedModel | None, str]:
    """The derived model to serve for CATDOG_RUNTIME=`runtime`, and why; None means TensorFlow.

    `auto`: the usable derived model with the highest speed-up over TensorFlow measured at derive time
    (geometric mean of batch 1 and batch 16), if above 1; else TensorFlow. A runtime name
    ("onnxruntime"): its fastest usable derived model; with a precision ("onnxruntime-fp32"): that
    one. RuntimeUnavailableError if there is none.
    """
    if runtime == TENSORFLOW:
        return None, "CATDOG_RUNTIME=tensorflow"
    if runtime not in runtime_choices():
        raise RuntimeUnavailableError(f"unknown runtime {runtime!r}; choose one of {runtime_choices()}")
    candidates = usable_derived(metadata, model_dir)
    if runtime != AUTO:
        candidates = [(e, why) for e, why in candidates if runtime in (e.runtime, e.key)]
    usable = [entry for entry, reason in candidates if not reason]
    if not usable:
        why = "; ".join(f"{entry.key}: {reason}" for entry, reason in candidates) or "no derived models"
        if runtime == AUTO:
            return None, f"no usable derived model ({why})"
        raise RuntimeUnavailableError(f"CATDOG_RUNTIME={runtime} cannot be used: {why}")
    best = max(usable, key=lambda entry: entry.speedup)
    if runtime == AUTO and best.speedup <= 1.0:
        return None, f"no derived model was faster than TensorFlow (best {best.key}: {best.speedup:.2f}x)"
    if runtime == AUTO:
        return best, f"fastest usable derived model: {best.speedup:.2f}x TensorFlow at derive time"
    return best, f"CATDOG_RUNTIME={runtime}"


def load_runner(entry: DerivedModel, model_dir: Path, image_size: int, verify: bool = True) -> Runner:
    """Create the runner for a derived model; `verify` checks the file's sha256 against metadata.json."""
    path = Path(model_dir) / entry.file
    if entry.runtime not in _RUNNERS:
        raise RuntimeUnavailableError(f"unknown runtime {entry.runtime!r}")
    if not runtime_installed(entry.runtime):
        raise RuntimeUnavailableError(_not_installed(entry.runtime))
    if not path.is_file():
        raise RuntimeUnavailableError(f"{path} is missing (python -m training derive --model {model_dir})")
    if verify and entry.sha256 and file_sha256(path) != entry.sha256:
        raise RuntimeUnavailableError(f"{path} is not the file metadata.json checked (sha256 differs)")
    try:
        return _RUNNERS[entry.runtime](path, image_size, entry.precision, runtime_threads())
    except Exception as exc:  # each runtime raises its own types for a corrupt file
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise RuntimeUnavailableError(f"cannot load {path} with {entry.runtime}: {detail}") from exc


def outputs_of(
    raw: Mapping[str, Any], count: int, has_pet_score: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The runner's named outputs as float64 (probabilities [N, 2], pet_score [N] or None), shape-checked."""
    probabilities = np.asarray(raw[PROBABILITIES], dtype=np.float64)
    if probabilities.shape != (count, 2):
        raise RuntimeError(f"model returned shape {probabilities.shape} for a batch of {count}")
    pet_score = np.asarray(raw[PET_SCORE], dtype=np.float64).reshape(count) if has_pet_score else None
    return probabilities, pet_score
