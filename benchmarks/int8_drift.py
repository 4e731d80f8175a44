"""How far an int8 backbone moves the answers on photos the head has not seen (held out by cross-validation).

    .venv/bin/python -m benchmarks.int8_drift [--model-dir model/default] [--calibration-per-class 100]

The derive gate compares a derived model with the SavedModel on the validation photos; a model fitted
on all the labelled photos has seen those, and its answers on them are confident. This measures the
same drift where it matters: the committed model's backbone at its input size, quantized by
`training.derive.write_tflite` exactly as `derive` does (int8 up to the pooled features, calibrated
on the same training photos), gives int8 features of every labelled photo; the recipe's head is then
cross-validated (10 folds, the committed model's C and feature transform) and each held-out photo's
P(cat) from the float32 features is compared with the one from the int8 features.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

try:
    from benchmarks.common import REPO_ROOT
except ModuleNotFoundError as error:
    raise SystemExit("run it from the repo root as: python -m benchmarks.int8_drift") from error

from catdog.contract import read_metadata
from training.crossval import fit_head, folds_for
from training.data import load_dataset
from training.features import make_member, parse_members, transform

DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"


def features_function(member: object, size: int) -> object:
    """uint8 [N, S, S, 3] -> {"features": pooled features}: the member's backbone, frozen, as derive
    converts it."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")
    traced = tf.function(lambda images: {"features": member.extractor(tf.cast(images, tf.float32))[0]})  # type: ignore[attr-defined]
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function(spec))
    graph, output, source = frozen.graph.as_graph_def(), frozen.outputs[0].name, frozen.inputs[0].name

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def serve(images: object) -> dict[str, object]:
        (features,) = tf.graph_util.import_graph_def(
            graph, input_map={source: images}, return_elements=[output], name="m"
        )
        return {"features": tf.identity(features, name="features")}

    return serve


def _run_all(function: object, images: np.ndarray, mirror: int, batch: int) -> np.ndarray:
    """`function` over `images` (or their mirror images) in batches, outputs concatenated."""
    parts = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        parts.append(np.asarray(function(np.ascontiguousarray(chunk[:, :, ::-1] if mirror else chunk))))  # type: ignore[operator]
    return np.concatenate(parts)


def main(argv: list[str] | None = None) -> int:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from training.derive import write_tflite

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "default")
    parser.add_argument("--calibration-per-class", type=int, default=100)
    args = parser.parse_args(argv)
    metadata = read_metadata(args.model_dir)
    config = metadata.model_extra["training"]["config"]  # type: ignore[index]
    ((name, size),) = parse_members(config["arch"])
    member = make_member(name, size, metadata.image_size)
    serve = features_function(member, metadata.image_size)
    calibration = (
        load_dataset(
            DATA_DIR, metadata.image_size, limit=args.calibration_per_class, splits=("train",), progress=False
        )
        .splits["train"]
        .images
    )
    data = load_dataset(DATA_DIR, metadata.image_size, splits=("train", "validation"), progress=False)
    images = np.concatenate([data.splits["train"].images, data.splits["validation"].images])
    labels = np.concatenate([data.splits["train"].labels, data.splits["validation"].labels])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "features-int8.tflite"
        write_tflite(serve, path, calibration)
        runner = Interpreter(model_path=str(path), num_threads=2).get_signature_runner()
        quantized = {
            mirror: _run_all(lambda x: runner(images=x)["features"], images, mirror, 1) for mirror in (0, 1)
        }
    exact = {
        mirror: _run_all(lambda x: serve(tf.constant(x))["features"].numpy(), images, mirror, 32)
        for mirror in (0, 1)
    }
    relative = np.abs(quantized[0] - exact[0]) / (np.abs(exact[0]) + 1e-3)
    kind, c = config["head_features"], float(metadata.model_extra["training"]["head"]["C"])  # type: ignore[index]
    drift, flips = np.zeros(len(labels)), 0
    for train, held_out in folds_for(labels, 10, 1, 0):
        x = transform(np.concatenate([exact[0][train], exact[1][train]]), kind)
        head = fit_head(x, np.tile(labels[train], 2), c)
        p_float = head.predict(transform(exact[0][held_out], kind))
        p_int8 = head.predict(transform(quantized[0][held_out], kind))
        drift[held_out] = np.abs(p_float - p_int8)
        flips += int(np.sum((p_float > 0.5) != (p_int8 > 0.5)))
    print(f"model {metadata.version}: {name} at {size} px, head C={c:g} on {kind} features")
    print(f"int8 pooled features vs float32: median relative error {np.median(relative):.3f}")
    print(
        f"held-out P(cat), {len(labels)} photos (10-fold): |delta| > 0.02 for {np.sum(drift > 0.02)} "
        f"({100 * np.mean(drift > 0.02):.1f}%), > 0.01 for {np.sum(drift > 0.01)}, "
        f"largest {drift.max():.3f}, labels changed {flips}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
