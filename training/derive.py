"""`python -m training derive`: models for faster CPU runtimes, derived from an exported SavedModel.

The SavedModel stays the artefact and the contract. From it this writes, under `<model>/derived/`:

- `model-fp32.onnx` (tf2onnx), run by ONNX Runtime and by OpenVINO (which reads ONNX directly, so
  no second copy in OpenVINO's own format is needed);
- `model-int8.onnx`: post-training static quantization (onnxruntime.quantization, QDQ, per-channel
  int8 weights, uint8 activations, entropy-calibrated ranges) calibrated on training photos; run by both;
- `model-fp32.tflite` and `model-int8.tflite` (TensorFlow's LiteRT converter; int8 calibrated on
  the same photos), run by LiteRT with XNNPACK.

Int8 quantizes the backbone, not the answer: everything from the pooled features on (the head, the
class probabilities, the pet score's similarities) stays float32 in both int8 files, so probabilities
and scores come out continuous, not on a 1/256 grid. ONNX Runtime's u8s8 kernels may saturate on x86
CPUs without VNNI and answer otherwise there than where the model was checked; 7-bit weights
(reduce_range) would avoid that but moved P(cat) by up to 0.78, so the probe check (catdog/probe.py)
is what keeps such a CPU from serving it: it falls back to another runtime.

Derived models take the service's input directly: uint8 [N, S, S, 3] at the model's image size
(the service resizes with Pillow before the model is called, so the SavedModel's in-graph resize is
the identity there). The graph is frozen and its resize op replaced by a cast.

Each derived model is checked against the SavedModel on the validation photos, and `auto` serves one
only if it passes the gate (`GATE`): accuracy within 0.1 point, at most one class disagreement, log loss
at most 0.001 above, P(cat) within 0.02 on every photo, and at most one pet flag in 1000 changed, each
runtime with its own threshold; fp32 models must also match within `tolerance` on every output. Each
gets its own pet-score threshold from its own scores on the photos the model was fitted on: the one
that flags the same share of them as the SavedModel's threshold flags of the SavedModel's scores, which
for a model trained here is the training rule itself (`ood_threshold`). The figures, whether it passed
and its speed relative to TensorFlow (interleaved rounds, same-round ratios) go into metadata.json's
`derived` list, which the service reads (`CATDOG_RUNTIME`).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def head_nodes_onnx(model: Any) -> list[str]:
    """Names of the ONNX nodes from the global pooling on: the part int8 leaves in float32."""
    nodes = list(model.graph.node)
    pool = next((i for i, n in enumerate(nodes) if n.op_type in ("GlobalAveragePool", "ReduceMean")), None)
    if pool is None:
        return []
    reached = set(nodes[pool].output)
    names = [nodes[pool].name]
    for node in nodes[pool + 1 :]:
        if reached & set(node.input):
            reached.update(node.output)
            names.append(node.name)
    return names


# ONNX int8 calibration keeps every activation of every photo in memory (~0.5 GB a photo at 340 px):
# its entropy calibration gets by with a few photos per class.
ONNX_CALIBRATION_PER_CLASS = 15


def write_onnx_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> None:
    """Activation ranges by entropy calibration (KL divergence of the histograms): min/max ranges,
    stretched by a few outlier activations, moved P(cat) by up to 0.04 on validation photos."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
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
            nodes_to_exclude=head_nodes_onnx(onnx.load(str(prepared))),
            calibrate_method=CalibrationMethod.Entropy,
        )
    finally:
        prepared.unlink(missing_ok=True)


def head_tensors_tflite(model: bytes) -> tuple[list[str], list[str]]:
    """(output tensor names, op types) of the LiteRT ops from the global pooling (a MEAN over a 4-D
    tensor) on: what the int8 converter must leave in float32."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    pool = next(
        (op for op in ops if op["op_name"] == "MEAN" and len(tensors[op["inputs"][0]]["shape"]) == 4), None
    )
    if pool is None:
        return [], []
    reached = set(pool["outputs"])
    head = [pool]
    for op in ops[pool["index"] + 1 :]:
        if reached & set(op["inputs"]):
            reached.update(op["outputs"])
            head.append(op)
    body_types = {op["op_name"] for op in ops[: pool["index"]]}
    names = [tensors[i]["name"] for op in head for i in op["outputs"]]
    return names, sorted({op["op_name"] for op in head} - body_types)


def write_tflite(serve: Any, path: Path, calibration: np.ndarray | None) -> None:
    """fp32 when `calibration` is None, else int8 weights and activations calibrated on it up to the
    pooled features, float32 from there on (selective quantization: TensorFlow's QuantizationDebugger
    with the head's ops and tensors denied; by name alone it would still quantize some of them)."""
    import tensorflow as tf

    holder = tf.Module()
    holder.serve = serve

    def converter() -> Any:
        return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder)

    float_model = converter().convert()
    if calibration is None:
        path.write_bytes(float_model)
        return
    images = calibration

    def representative() -> Any:
        return ([images[i : i + 1]] for i in range(len(images)))

    quantizing = converter()
    quantizing.optimizations = [tf.lite.Optimize.DEFAULT]
    quantizing.representative_dataset = representative
    names, head_only_ops = head_tensors_tflite(float_model)
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=names, denylisted_ops=head_only_ops
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=quantizing, debug_dataset=representative, debug_options=options
    )
    path.write_bytes(debugger.get_nondebug_quantized_model())


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


@dataclass(frozen=True)
class Gate:
    """What a derived model must keep of the SavedModel's answers to be served by `auto`: per model
    version, one answer, whatever the runtime."""

    accuracy_points: float = 0.1  # validation accuracy at most this much lower (percentage points)
    class_disagreements: int = 1  # photos whose label differs
    log_loss_margin: float = 0.001  # validation log loss at most this much higher
    max_delta_p_cat: float = 0.02  # |P(cat) - reference P(cat)| on every photo
    pet_flags_per_1000: float = 1.0  # photos whose cat-or-dog flag differs, per 1000


GATE = Gate()


def equivalence(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    labels: np.ndarray,
    thresholds: tuple[float, float] | None,
) -> dict[str, Any]:
    """How far `candidate` is from the SavedModel's answers on the same photos. `thresholds`: the
    SavedModel's pet-score threshold and the candidate's own (each flags with its own)."""
    p_ref, p_new = reference[PROBABILITIES][:, 1], candidate[PROBABILITIES][:, 1]
    result: dict[str, Any] = {
        "photos": len(labels),
        "max_abs_diff_probabilities": float(np.max(np.abs(p_ref - p_new))),
        "accuracy": accuracy(labels, p_new),
        "reference_accuracy": accuracy(labels, p_ref),
        "log_loss": log_loss(labels, p_new),
        "reference_log_loss": log_loss(labels, p_ref),
        "class_disagreements": int(np.sum((p_ref > 0.5) != (p_new > 0.5))),
    }
    if PET_SCORE in reference:
        result["max_abs_diff_pet_score"] = float(np.max(np.abs(reference[PET_SCORE] - candidate[PET_SCORE])))
        if thresholds is not None:
            flagged_ref = reference[PET_SCORE] < thresholds[0]
            flagged_new = candidate[PET_SCORE] < thresholds[1]
            result["pet_flag_disagreements"] = int(np.sum(flagged_ref != flagged_new))
            result["pets_flagged"] = int(np.sum(flagged_new))
            result["reference_pets_flagged"] = int(np.sum(flagged_ref))
    return result


def judge(figures: dict[str, Any], precision: str, tolerance: float, gate: Gate = GATE) -> tuple[bool, str]:
    """(passed, why not): the gate for every derived model; fp32 also within `tolerance` everywhere."""
    problems = []
    if precision == "fp32":
        worst = max(figures["max_abs_diff_probabilities"], figures.get("max_abs_diff_pet_score", 0.0))
        if worst > tolerance:
            problems.append(f"fp32 max abs difference {worst:.2e} > tolerance {tolerance:.0e}")
    drop = 100 * (figures["reference_accuracy"] - figures["accuracy"])
    if drop > gate.accuracy_points + 1e-9:
        problems.append(f"validation accuracy {drop:.2f} points lower (at most {gate.accuracy_points})")
    if figures["class_disagreements"] > gate.class_disagreements:
        problems.append(
            f"{figures['class_disagreements']} labels differ (at most {gate.class_disagreements})"
        )
    worse = figures["log_loss"] - figures["reference_log_loss"]
    if worse > gate.log_loss_margin + 1e-12:
        problems.append(f"log loss {worse:.4f} higher (at most {gate.log_loss_margin})")
    if figures["max_abs_diff_probabilities"] > gate.max_delta_p_cat:
        moved = figures["max_abs_diff_probabilities"]
        problems.append(f"P(cat) moved by up to {moved:.3f} (at most {gate.max_delta_p_cat})")
    flags = figures.get("pet_flag_disagreements", 0)
    allowed = gate.pet_flags_per_1000 * max(1, figures["photos"]) / 1000
    if flags > allowed + 1e-9:
        problems.append(f"{flags} pet flags differ (at most {gate.pet_flags_per_1000:g} per 1000)")
    return not problems, "; ".join(problems)


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


def _training_setting(metadata: ModelMetadata, name: str, default: Any) -> Any:
    """A setting the model was trained with (metadata.json `training.config`), else `default`."""
    training = (metadata.model_extra or {}).get("training") or {}
    return (training.get("config") or {}).get(name, default)


def own_threshold(own: np.ndarray, reference: np.ndarray, reference_threshold: float) -> float:
    """A derived model's pet-score threshold: the value at the same rank among its own scores of the
    fitted photos as the SavedModel's threshold has among the SavedModel's (linear interpolation both
    ways). A model that scores like the SavedModel gets the SavedModel's threshold back exactly, so
    the two flag the same photos everywhere, not only among the fitted ones."""
    ranked = np.sort(np.asarray(reference, dtype=np.float64))
    if not ranked[0] <= reference_threshold <= ranked[-1]:
        return reference_threshold  # it flags all of the fitted photos or none: no rank to keep
    rank = float(np.interp(reference_threshold, ranked, np.linspace(0.0, 1.0, len(ranked))))
    return float(np.quantile(np.asarray(own, dtype=np.float64), rank))


def _per_class(images: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """The first `count` images of each class."""
    return np.concatenate([images[labels == label][:count] for label in np.unique(labels)])


def derive(
    model_dir: Path | str,
    data_dir: Path | str,
    *,
    runtimes: Sequence[str] = DEFAULT_RUNTIMES,
    precisions: Sequence[str] = PRECISIONS,
    calibration_per_class: int = 100,
    check_per_class: int | None = None,
    tolerance: float = 1e-3,
    speed_rounds: int = 3,
    speed_seconds: float = 1.5,
) -> ModelMetadata:
    """Derive, check and time the models; write them under `<model_dir>/derived/` and list them in
    metadata.json (replacing any earlier list). Returns the new metadata.

    `check_per_class` limits the photos of every split used (validation for the gate, the fitted
    photos for the thresholds); `calibration_per_class` training photos calibrate int8."""
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
    data = load_dataset(data_dir, size, limit=check_per_class, splits=("train", "validation"), progress=False)
    images, labels = data.splits["validation"].images, data.splits["validation"].labels
    calibration = load_dataset(data_dir, size, limit=calibration_per_class, splits=("train",), progress=False)
    calibration_images = calibration.splits["train"].images
    calibration_labels = calibration.splits["train"].labels
    # The photos the model was fitted on: their scores set each runtime's threshold.
    fitted = data.splits["train"].images
    if _training_setting(metadata, "fit_on", "train") == "all":
        fitted = np.concatenate([fitted, images])
    logger.info(
        "%d calibration photos, %d check photos, %d fitted photos",
        len(calibration_images),
        len(images),
        len(fitted),
    )

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
                    few = _per_class(calibration_images, calibration_labels, ONNX_CALIBRATION_PER_CLASS)
                    write_onnx_int8(fp32, path, few)
                else:
                    write_tflite(serve, path, calibration_images if precision == "int8" else None)
                written[relative] = ""
                logger.info("wrote %s (%.1f MB)", relative, path.stat().st_size / 1e6)
            except Exception as exc:  # converters raise anything; the entry records why
                written[relative] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                logger.warning("could not write %s: %s", relative, written[relative])

    predict_reference = _as_dict(reference_model)
    reference = _predict_all(predict_reference, images)
    reference_threshold = (
        metadata.ood.threshold if metadata.ood is not None and metadata.has_pet_score else None
    )
    if reference_threshold is not None:
        reference_fitted = _predict_all(predict_reference, fitted)[PET_SCORE]
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
                candidate = _as_dict(ExportedModel(runner, metadata, model_dir))
                if reference_threshold is not None:
                    own = _predict_all(candidate, fitted)[PET_SCORE]
                    entry.ood_threshold = own_threshold(own, reference_fitted, reference_threshold)
                thresholds = None
                if reference_threshold is not None and entry.ood_threshold is not None:
                    thresholds = (reference_threshold, entry.ood_threshold)
                entry.equivalence = equivalence(
                    reference, _predict_all(candidate, images), labels, thresholds
                )
                entry.passed, entry.reason = judge(entry.equivalence, precision, tolerance)
                if entry.passed:
                    runners[entry.key] = ExportedModel(runner, metadata, model_dir).predict
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
