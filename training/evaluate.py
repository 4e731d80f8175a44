"""Classification metrics in plain numpy, and the `evaluate` command for an exported model.

The metric functions take labels (0 = cat, 1 = dog) and P(dog); they import nothing heavier than
numpy so they are easy to test against hand-computed values. `evaluate_saved_model` measures an
exported SavedModel exactly as the service runs it (catdog.imaging + the `serve` signature).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("cat", "dog")
LOG_LOSS_EPS = 1e-7
THRESHOLD = 0.5

logger = logging.getLogger("catdog.training.evaluate")


def _check(y_true: Any, p_dog: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(p_dog, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} probabilities")
    if y.size == 0:
        raise ValueError("no examples to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (cat) or 1 (dog)")
    return y, p


def predict_labels(p_dog: Any, threshold: float = THRESHOLD) -> np.ndarray:
    """Dog when P(dog) > threshold: at 0.5 this is the service's argmax over [P(cat), P(dog)],
    which gives a tie to the first class (cat)."""
    return (np.asarray(p_dog, dtype=np.float64) > threshold).astype(np.int64)


def accuracy(y_true: Any, p_dog: Any, threshold: float = THRESHOLD) -> float:
    y, p = _check(y_true, p_dog)
    return float(np.mean(predict_labels(p, threshold) == y))


def log_loss(y_true: Any, p_dog: Any, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary cross-entropy; probabilities clipped to [eps, 1-eps] so a confident miss is finite."""
    y, p = _check(y_true, p_dog)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1.0 - p)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def roc_auc(y_true: Any, p_dog: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when only one class is present."""
    y, p = _check(y_true, p_dog)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = _average_ranks(p)
    u = float(ranks[y == 1].sum()) - positives * (positives + 1) / 2.0
    return u / (positives * negatives)


def roc_curve(y_true: Any, p_dog: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) at threshold +inf."""
    y, p = _check(y_true, p_dog)
    order = np.argsort(-p, kind="mergesort")
    scores = p[order]
    hits = y[order]
    # Last index of each run of equal scores: the curve only moves between distinct thresholds.
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tps = np.cumsum(hits)[last]
    fps = (last + 1) - tps
    positives = max(int(y.sum()), 1)
    negatives = max(int(y.size - y.sum()), 1)
    fpr = np.r_[0.0, fps / negatives]
    tpr = np.r_[0.0, tps / positives]
    thresholds = np.r_[np.inf, scores[last]]
    return fpr, tpr, thresholds


def confusion_matrix(y_true: Any, p_dog: Any, threshold: float = THRESHOLD) -> np.ndarray:
    """2x2 counts, rows = true class, columns = predicted class, order (cat, dog)."""
    y, p = _check(y_true, p_dog)
    predicted = predict_labels(p, threshold)
    matrix = np.zeros((2, 2), dtype=np.int64)
    np.add.at(matrix, (y, predicted), 1)
    return matrix


def per_class_report(
    matrix: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class; 0.0 where a ratio has no denominator."""
    report: dict[str, dict[str, float]] = {}
    for index, name in enumerate(class_names):
        true_positive = float(matrix[index, index])
        predicted = float(matrix[:, index].sum())
        actual = float(matrix[index, :].sum())
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(actual)}
    return report


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def compute_metrics(y_true: Any, p_dog: Any, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """Every metric as JSON-ready Python values (non-finite numbers become null)."""
    y, p = _check(y_true, p_dog)
    matrix = confusion_matrix(y, p)
    fpr, tpr, thresholds = roc_curve(y, p)
    return {
        "examples": int(y.size),
        "threshold": THRESHOLD,
        "accuracy": accuracy(y, p),
        "log_loss": log_loss(y, p),
        "roc_auc": _finite_or_none(roc_auc(y, p)),
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class_report(matrix, class_names),
        "roc_curve": {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": [_finite_or_none(float(t)) for t in thresholds],
        },
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """A few human-readable lines for the terminal."""
    auc = metrics["roc_auc"]
    lines = [
        f"examples: {metrics['examples']}",
        f"accuracy: {metrics['accuracy']:.4f}",
        f"log loss: {metrics['log_loss']:.4f}",
        f"ROC AUC:  {auc:.4f}" if auc is not None else "ROC AUC:  n/a (one class only)",
        "confusion matrix (rows true, cols predicted; " + ", ".join(metrics["class_names"]) + "):",
    ]
    lines += ["  " + " ".join(f"{count:6d}" for count in row) for row in metrics["confusion_matrix"]]
    for name, stats in metrics["per_class"].items():
        lines.append(
            f"{name}: precision {stats['precision']:.4f} recall {stats['recall']:.4f} "
            f"f1 {stats['f1']:.4f} support {stats['support']}"
        )
    return "\n".join(lines)


def predict_with_signature(serve: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """P(dog) for uint8 images through a `serve`-style callable (uint8 batch -> probabilities)."""
    import tensorflow as tf

    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start : start + batch_size], dtype=tf.uint8)
        probabilities = serve(batch)["probabilities"].numpy()
        outputs.append(np.asarray(probabilities, dtype=np.float64)[:, 1])
    return np.concatenate(outputs) if outputs else np.zeros(0)


def evaluate_saved_model(
    model_dir: Path | str,
    data_dir: Path | str,
    *,
    split: str = "validation",
    limit: int | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    output_json: Path | str | None = None,
) -> dict[str, Any]:
    """Measure an exported model on one split of a dataset, as the service would classify it."""
    from training.data import load_dataset
    from training.errors import DatasetError
    from training.export import METADATA_FILE

    model_dir = Path(model_dir)
    metadata_file = model_dir / METADATA_FILE
    if not (model_dir / "saved_model.pb").is_file() or not metadata_file.is_file():
        raise DatasetError(f"no exported model in {model_dir} (expected saved_model.pb and {METADATA_FILE})")
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    if list(metadata["class_names"]) != list(CLASS_NAMES):
        raise DatasetError(f"model classes {metadata['class_names']} are not {list(CLASS_NAMES)}")
    image_size = int(metadata["image_size"])
    # When the dataset has no validation folder, draw the split training drew: same fraction and
    # seed as recorded in the metadata, unless given explicitly.
    training_info = metadata.get("training", {})
    if val_fraction is None:
        val_fraction = float(training_info.get("val_fraction", 0.2))
    if seed is None:
        seed = int(training_info.get("seed", 42))
    dataset = load_dataset(
        data_dir,
        image_size,
        val_fraction=val_fraction,
        seed=seed,
        limit=limit,
        splits=(split,),
    )

    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    data = dataset.splits[split]
    p_dog = predict_with_signature(loaded.serve, data.images)
    metrics = compute_metrics(data.labels, p_dog)
    result = {
        "model": str(model_dir),
        "model_version": metadata.get("version"),
        "data_dir": str(dataset.root),
        "layout": dataset.layout,
        "split": split,
        "validation_source": dataset.validation_source,
        "data_hash": dataset.data_hash,
        "counts": dataset.counts()[split],
        "skipped": dataset.skipped_json()[split],
        "metrics": metrics,
    }
    if output_json is not None:
        path = Path(output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
