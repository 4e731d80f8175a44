"""Classification metrics of a cat/dog model, computed by scikit-learn.

Every function takes labels (0 = cat, 1 = dog, the order of `catdog.contract.CLASS_NAMES`) and
P(dog). An image is called a dog when P(dog) > 0.5: the service's argmax over [P(cat), P(dog)],
which gives a tie to the first class (cat). `compute_metrics` returns the JSON block stored in
`metadata.json` and `report/evaluation.json`; its keys and their shapes are part of those files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from catdog.contract import CLASS_NAMES

# Stored log losses were computed with P clipped to [1e-7, 1 - 1e-7]; scikit-learn clips to the
# float64 machine epsilon instead, so the clipping is done here to keep the figures comparable.
LOG_LOSS_EPS = 1e-7
THRESHOLD = 0.5
LABELS: list[int] = list(range(len(CLASS_NAMES)))


def _check(y_true: Any, p_dog: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(p_dog, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} probabilities")
    if y.size == 0:
        raise ValueError("no examples to evaluate")
    if not np.isin(y, LABELS).all():
        raise ValueError("labels must be 0 (cat) or 1 (dog)")
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite")
    return y, p


def predict_labels(p_dog: Any, threshold: float = THRESHOLD) -> np.ndarray:
    """Dog (1) when P(dog) > threshold, else cat (0): at 0.5, the service's argmax."""
    return (np.asarray(p_dog, dtype=np.float64) > threshold).astype(np.int64)


def accuracy(y_true: Any, p_dog: Any, threshold: float = THRESHOLD) -> float:
    y, p = _check(y_true, p_dog)
    return float(skm.accuracy_score(y, predict_labels(p, threshold)))


def log_loss(y_true: Any, p_dog: Any, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary cross-entropy with P(dog) clipped to [eps, 1-eps], so a confident miss is finite."""
    y, p = _check(y_true, p_dog)
    return float(skm.log_loss(y, np.clip(p, eps, 1.0 - eps), labels=LABELS))


def roc_auc(y_true: Any, p_dog: Any) -> float:
    """Area under the ROC curve (tied scores count half); NaN when only one class is present."""
    y, p = _check(y_true, p_dog)
    if np.unique(y).size < len(LABELS):
        return math.nan
    return float(skm.roc_auc_score(y, p))


def roc_curve(y_true: Any, p_dog: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) at threshold +inf.

    With one class only, the rate whose class is missing is 0 everywhere (not NaN).
    """
    y, p = _check(y_true, p_dog)
    with warnings.catch_warnings():
        # "No positive/negative samples": the rate is 0/0, reported as 0 below.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = skm.roc_curve(y, p, pos_label=1, drop_intermediate=False)
    fpr = np.nan_to_num(np.asarray(fpr, dtype=np.float64), nan=0.0)
    tpr = np.nan_to_num(np.asarray(tpr, dtype=np.float64), nan=0.0)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    thresholds[0] = np.inf  # scikit-learn < 1.3 put max(score) + 1 there
    return fpr, tpr, thresholds


def confusion_matrix(y_true: Any, p_dog: Any, threshold: float = THRESHOLD) -> np.ndarray:
    """2x2 counts, rows = true class, columns = predicted class, order (cat, dog)."""
    y, p = _check(y_true, p_dog)
    return np.asarray(skm.confusion_matrix(y, predict_labels(p, threshold), labels=LABELS), dtype=np.int64)


def per_class_report(
    y_true: Any,
    p_dog: Any,
    class_names: Sequence[str] = CLASS_NAMES,
    threshold: float = THRESHOLD,
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class; 0.0 where a ratio has no denominator."""
    y, p = _check(y_true, p_dog)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predict_labels(p, threshold), labels=LABELS, average=None, zero_division=0.0
    )
    return {
        name: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(class_names)
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def compute_metrics(y_true: Any, p_dog: Any, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """Every metric as JSON-ready Python values (non-finite numbers become null)."""
    y, p = _check(y_true, p_dog)
    fpr, tpr, thresholds = roc_curve(y, p)
    return {
        "examples": int(y.size),
        "threshold": THRESHOLD,
        "accuracy": accuracy(y, p),
        "log_loss": log_loss(y, p),
        "roc_auc": _finite_or_none(roc_auc(y, p)),
        "class_names": list(class_names),
        "confusion_matrix": confusion_matrix(y, p).tolist(),
        "per_class": per_class_report(y, p, class_names),
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
