"""`python -m training derive`: models for faster CPU runtimes, derived from an exported SavedModel.

The SavedModel stays the artefact and the contract. From it this writes, under `<model>/derived/`:

- `model-fp32.onnx` (tf2onnx), run by ONNX Runtime and by OpenVINO (which reads ONNX directly, so
  no second 24 MB copy in OpenVINO's own format is needed);
- `model-int8.onnx`: post-training static quantization (onnxruntime.quantization, QDQ, per-channel
  int8 weights, uint8 activations) calibrated on training photos; run by both as well;
- `model-fp32.tflite` and `model-int8.tflite` (TensorFlow's LiteRT converter; int8 calibrated on
  the same training photos), run by LiteRT with XNNPACK.

Derived models take the service's input directly: uint8 [N, S, S, 3] at the model's image size
(the service resizes with Pillow before the model is called, so the SavedModel's in-graph resize is
the identity there). The graph is frozen and its resize op replaced by a cast; everything after it
(pixel scaling, backbone, head, pet score) is converted as it is.

Each derived model is checked on real photos against the SavedModel: fp32 must agree within
`tolerance` on every probability and pet score; int8 must keep validation accuracy within 0.1 point,
log loss within `int8_log_loss_margin` and flag (nearly) the same photos as non-pets. The figures,
whether it passed and its speed relative to TensorFlow (interleaved rounds, same-round ratios) go
into metadata.json's `derived` list, which the service reads (`CATDOG_RUNTIME`).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catdog.contract import (
    PET_SCORE,
    PROBABILITIES,
    DerivedModel,
    ModelMetadata,
    read_metadata,
    write_metadata,
)
from catdog.probe import record_probe
from catdog.runtimes import (
    LITERT,
    ONNXRUNTIME,
    OPENVINO,
    RuntimeUnavailableError,
    file_sha256,
    load_runner,
    runtime_installed,
)
from catdog.saved_model import ExportedModel, ModelLoadError, load_exported_model
from training.data import load_dataset
from training.errors import TrainingError
from training.metrics import accuracy, log_loss

logger = logging.getLogger("catdog.training.derive")

DERIVED_DIR = "derived"
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "int8")
# Which file each runtime reads: OpenVINO runs the ONNX files.
RUNTIME_FORMAT = {ONNXRUNTIME: "onnx", OPENVINO: "onnx", LITERT: "tflite"}
DEFAULT_RUNTIMES = (ONNXRUNTIME, OPENVINO, LITERT)
RESIZE_OPS = ("ScaleAndTranslate", "ResizeBilinear", "ResizeArea", "ResizeBicubic", "ResizeNearestNeighbor")
ONNX_OPSET = 17


class DeriveError(TrainingError):
    """The SavedModel cannot be derived from (the CLI prints this as one line)."""


def derived_file(fmt: str, precision: str) -> str:
    return f"{DERIVED_DIR}/model-{precision}.{fmt}"


# --- the fixed-size graph ---------------------------------------------------------------------------


def fixed_size_function(model_dir: Path, image_size: int) -> Any:
    """A tf.function uint8 [N, S, S, 3] -> {"probabilities", "pet_score"?}: the SavedModel's frozen
    serving graph with its resize replaced by a cast (the identity for images already S x S)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    loaded = tf.saved_model.load(str(model_dir))  # kept alive: the signature reads its variables
    signature = loaded.signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(signature)
    graph_def = frozen.graph.as_graph_def()
    # The frozen function's outputs follow the signature's outputs sorted by name.
    names = dict(zip(sorted(signature.structured_outputs), [t.name for t in frozen.outputs], strict=True))
    input_name = frozen.inputs[0].name
    resizes = [node.name for node in graph_def.node if node.op in RESIZE_OPS]
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def serve(images: Any) -> dict[str, Any]:
        if len(resizes) == 1:  # the usual case: skip the resize, keep everything after it
            input_map = {f"{resizes[0]}:0": tf.cast(images, tf.float32)}
        else:  # none or several: keep the graph whole (the converters get the resize ops too)
            input_map = {input_name: images}
        keys = sorted(names)
        outputs = tf.graph_util.import_graph_def(
            graph_def, input_map=input_map, return_elements=[names[key] for key in keys], name="model"
        )
        return {key: tf.identity(value, name=key) for key, value in zip(keys, outputs, strict=True)}

    return serve


# --- converters --------------------------------------------------------------------------------------


def write_onnx(serve: Any, path: Path) -> None:
    import tf2onnx

    tf2onnx.convert.from_function(
        serve, input_signature=serve.input_signature, opset=ONNX_OPSET, output_path=str(path)
    )


def write_onnx_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter([{"images": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    prepared = path.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        prepared.unlink(missing_ok=True)


def write_tflite(serve: Any, path: Path, calibration: np.ndarray | None) -> None:
    """fp32 when `calibration` is None, else int8 weights and activations calibrated on it."""
    import tensorflow as tf

    holder = tf.Module()
    holder.serve = serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
    path.write_bytes(converter.convert())


# --- checks ------------------------------------------------------------------------------------------


def _predict_all(
    predict: Callable[[np.ndarray], dict[str, np.ndarray]], images: np.ndarray, batch: int = 16
) -> dict[str, np.ndarray]:
    parts = [predict(images[start : start + batch]) for start in range(0, len(images), batch)]
    return {key: np.concatenate([np.asarray(p[key], dtype=np.float64) for p in parts]) for key in parts[0]}


def _as_dict(model: ExportedModel) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = model.predict(images)
        result = {PROBABILITIES: outputs.probabilities}
        if outputs.pet_score is not None:
            result[PET_SCORE] = outputs.pet_score
        return result

    return predict


def equivalence(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    labels: np.ndarray,
    pet_threshold: float | None,
) -> dict[str, Any]:
    """How far `candidate` is from the SavedModel's answers on the same photos."""
    p_ref, p_new = reference[PROBABILITIES][:, 1], candidate[PROBABILITIES][:, 1]
    result: dict[str, Any] = {
        "photos": len(labels),
        "max_abs_diff_probabilities": float(
            np.max(np.abs(reference[PROBABILITIES] - candidate[PROBABILITIES]))
        ),
        "accuracy": accuracy(labels, p_new),
        "reference_accuracy": accuracy(labels, p_ref),
        "log_loss": log_loss(labels, p_new),
        "reference_log_loss": log_loss(labels, p_ref),
        "class_disagreements": int(np.sum((p_ref >= 0.5) != (p_new >= 0.5))),
    }
    if PET_SCORE in reference:
        result["max_abs_diff_pet_score"] = float(np.max(np.abs(reference[PET_SCORE] - candidate[PET_SCORE])))
        if pet_threshold is not None:
            flagged_ref = reference[PET_SCORE] < pet_threshold
            flagged_new = candidate[PET_SCORE] < pet_threshold
            result["pet_flag_disagreements"] = int(np.sum(flagged_ref != flagged_new))
    return result


def judge(
    figures: dict[str, Any], precision: str, tolerance: float, int8_log_loss_margin: float
) -> tuple[bool, str]:
    """(passed, why not): fp32 within `tolerance`; int8 accuracy within 0.1 point, log loss within
    the margin, pet flags changed on at most 0.5% of the photos."""
    if precision == "fp32":
        worst = max(figures["max_abs_diff_probabilities"], figures.get("max_abs_diff_pet_score", 0.0))
        if worst > tolerance:
            return False, f"max abs difference {worst:.2e} > tolerance {tolerance:.0e}"
        return True, ""
    drop = figures["reference_accuracy"] - figures["accuracy"]
    if drop > 0.001 + 1e-12:
        return False, f"validation accuracy {100 * drop:.2f} points lower"
    worse = figures["log_loss"] - figures["reference_log_loss"]
    if worse > int8_log_loss_margin:
        return False, f"log loss {worse:.4f} higher (margin {int8_log_loss_margin})"
    flags = figures.get("pet_flag_disagreements", 0)
    if flags > 0.005 * figures["photos"]:
        return False, f"{flags} photos' pet flag changed"
    return True, ""


def measure_speed(
    runners: dict[str, Callable[[np.ndarray], Any]],
    images: np.ndarray,
    rounds: int = 3,
    seconds: float = 1.5,
) -> dict[str, dict[str, float]]:
    """Batch-1 latency (ms) and batch-16 throughput (img/s) of each runner, rounds interleaved.

    Every round times each runner in turn, so a machine shared with other work slows them alike;
    `speedup` is the median over rounds of the same-round ratio to "tensorflow" (geometric mean of
    the batch-1 and batch-16 ratios).
    """
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    batch = images[:16] if len(images) >= 16 else np.resize(images, (16, *images.shape[1:]))
    for _ in range(rounds):
        for name, run in runners.items():
            run(images[:1])
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 2 or calls < 3:
                run(images[calls % len(images) : calls % len(images) + 1])
                calls += 1
            batch1_ms = 1000 * (time.perf_counter() - started) / calls
            run(batch)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds or calls < 2:
                run(batch)
                calls += 1
            samples[name].append((batch1_ms, 16 * calls / (time.perf_counter() - started)))
    result = {}
    for name, values in samples.items():
        ratios = [
            math.sqrt((tf_b1 / b1) * (b16 / tf_b16))
            for (b1, b16), (tf_b1, tf_b16) in zip(values, samples["tensorflow"], strict=True)
        ]
        result[name] = {
            "batch1_ms": round(statistics.median(v[0] for v in values), 2),
            "batch16_images_per_s": round(statistics.median(v[1] for v in values), 2),
            "batch1_speedup": round(
                statistics.median(tf[0] / v[0] for v, tf in zip(values, samples["tensorflow"], strict=True)),
                3,
            ),
            "batch16_speedup": round(
                statistics.median(v[1] / tf[1] for v, tf in zip(values, samples["tensorflow"], strict=True)),
                3,
            ),
            "speedup": round(statistics.median(ratios), 3),
            "rounds": rounds,
        }
    return result


# --- the command -------------------------------------------------------------------------------------


def derive(
    model_dir: Path | str,
    data_dir: Path | str,
    *,
    runtimes: Sequence[str] = DEFAULT_RUNTIMES,
    precisions: Sequence[str] = PRECISIONS,
    calibration_per_class: int = 32,
    check_per_class: int | None = None,
    tolerance: float = 1e-3,
    int8_log_loss_margin: float = 0.01,
    speed_rounds: int = 3,
    speed_seconds: float = 1.5,
) -> ModelMetadata:
    """Derive, check and time the models; write them under `<model_dir>/derived/` and list them in
    metadata.json (replacing any earlier list). Returns the new metadata."""
    model_dir = Path(model_dir)
    try:
        reference_model = load_exported_model(model_dir)
    except ModelLoadError as exc:
        raise DeriveError(str(exc)) from exc
    metadata = reference_model.metadata
    unknown = [r for r in runtimes if r not in RUNTIME_FORMAT]
    if unknown or not set(precisions) <= set(PRECISIONS):
        raise DeriveError(f"unknown runtime or precision: {unknown or list(precisions)}")
    size = metadata.image_size
    started = time.perf_counter()
    calibration = load_dataset(data_dir, size, limit=calibration_per_class, splits=("train",), progress=False)
    check = load_dataset(data_dir, size, limit=check_per_class, splits=("validation",), progress=False)
    images, labels = check.splits["validation"].images, check.splits["validation"].labels
    calibration_images = calibration.splits["train"].images
    logger.info("%d calibration photos, %d check photos", len(calibration_images), len(images))

    out = model_dir / DERIVED_DIR
    out.mkdir(exist_ok=True)
    serve = fixed_size_function(model_dir, size)
    formats = sorted({RUNTIME_FORMAT[r] for r in runtimes})
    written: dict[str, str] = {}  # file -> "" or why it could not be written
    for fmt in formats:
        for precision in precisions:
            relative = derived_file(fmt, precision)
            path = model_dir / relative
            try:
                if fmt == "onnx" and precision == "fp32":
                    write_onnx(serve, path)
                elif fmt == "onnx":
                    fp32 = model_dir / derived_file("onnx", "fp32")
                    if not fp32.is_file():
                        write_onnx(serve, fp32)
                    write_onnx_int8(fp32, path, calibration_images)
                else:
                    write_tflite(serve, path, calibration_images if precision == "int8" else None)
                written[relative] = ""
                logger.info("wrote %s (%.1f MB)", relative, path.stat().st_size / 1e6)
            except Exception as exc:  # converters raise anything; the entry records why
                written[relative] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                logger.warning("could not write %s: %s", relative, written[relative])

    reference = _predict_all(_as_dict(reference_model), images)
    pet_threshold = metadata.ood.threshold if metadata.ood is not None else None
    entries: list[DerivedModel] = []
    runners: dict[str, Callable[[np.ndarray], Any]] = {"tensorflow": reference_model.predict}
    for runtime in runtimes:
        for precision in precisions:
            relative = derived_file(RUNTIME_FORMAT[runtime], precision)
            entry = DerivedModel(runtime=runtime, precision=precision, file=relative)
            if written.get(relative):
                entry.reason = f"conversion failed: {written[relative]}"
            elif not runtime_installed(runtime):
                entry.reason = f"{runtime} is not installed here: not checked"
            else:
                entry.sha256 = file_sha256(model_dir / relative)
                try:
                    runner = load_runner(entry, model_dir, size, verify=False)
                except RuntimeUnavailableError as exc:
                    entry.reason = str(exc)
                    logger.warning("%s: not used: %s", entry.key, entry.reason)
                    entries.append(entry)
                    continue
                candidate = ExportedModel(runner, metadata, model_dir)
                entry.equivalence = equivalence(
                    reference, _predict_all(_as_dict(candidate), images), labels, pet_threshold
                )
                entry.passed, entry.reason = judge(
                    entry.equivalence, precision, tolerance, int8_log_loss_margin
                )
                if entry.passed:
                    runners[entry.key] = candidate.predict
                    entry.probe = record_probe(runner, size)
            logger.info("%s: %s %s", entry.key, "passed" if entry.passed else "not used", entry.reason)
            entries.append(entry)
    speed = measure_speed(runners, images, rounds=speed_rounds, seconds=speed_seconds)
    for entry in entries:
        if entry.key in speed:
            entry.speed = {**speed[entry.key], "tensorflow": speed["tensorflow"]}
            entry.speedup = speed[entry.key]["speedup"]
    probe = metadata.probe or record_probe(reference_model.runner, size)
    updated = metadata.model_copy(update={"derived": entries, "probe": probe})
    write_metadata(model_dir, updated)
    logger.info("derived %d models in %.0f s", sum(e.passed for e in entries), time.perf_counter() - started)
    return read_metadata(model_dir)


def format_derived(metadata: ModelMetadata) -> str:
    lines = [f"{'model':<20} {'passed':<7} {'b1 ms':>7} {'b16 img/s':>10} {'speedup':>8}  accuracy  notes"]
    tf_speed = next((e.speed["tensorflow"] for e in metadata.derived if e.speed), None)
    if tf_speed:
        lines.append(
            f"{'tensorflow':<20} {'-':<7} {tf_speed['batch1_ms']:>7.1f} "
            f"{tf_speed['batch16_images_per_s']:>10.1f} {1.0:>8.2f}"
        )
    for entry in metadata.derived:
        b1 = f"{entry.speed['batch1_ms']:.1f}" if entry.speed else "-"
        b16 = f"{entry.speed['batch16_images_per_s']:.1f}" if entry.speed else "-"
        acc = entry.equivalence.get("accuracy")
        lines.append(
            f"{entry.key:<20} {'yes' if entry.passed else 'no':<7} {b1:>7} {b16:>10} {entry.speedup:>8.2f}  "
            f"{'-' if acc is None else f'{acc:.4f}':<8}  {entry.reason}"
        )
    return "\n".join(lines)
