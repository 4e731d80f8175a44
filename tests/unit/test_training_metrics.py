"""Metrics against values worked out by hand (see the comments for the arithmetic).

These cases were written for the earlier plain-numpy metrics; the scikit-learn version must give
the same numbers, so figures stored in older reports stay comparable.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training.metrics import (
    accuracy,
    compute_metrics,
    confusion_matrix,
    log_loss,
    per_class_report,
    roc_auc,
    roc_curve,
)

# Labels 0 = cat, 1 = dog; p = P(dog). Predicted (p > 0.5): 0, 1, 1, 1, 0.
Y = [0, 0, 1, 1, 1]
P = [0.1, 0.6, 0.6, 0.8, 0.4]


def test_accuracy_counts_correct_predictions() -> None:
    # correct: #0 (cat), #2 and #3 (dog); wrong: #1, #4
    assert accuracy(Y, P) == pytest.approx(3 / 5)
    assert accuracy([1, 0], [0.9, 0.2]) == 1.0


def test_exactly_half_is_a_cat_like_the_services_argmax() -> None:
    assert accuracy([0], [0.5]) == 1.0
    assert accuracy([1], [0.5]) == 0.0


def test_log_loss_matches_hand_computation() -> None:
    expected = -(math.log(0.9) + math.log(0.4) + math.log(0.6) + math.log(0.8) + math.log(0.4)) / 5
    assert log_loss(Y, P) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.534382, abs=1e-6)


def test_log_loss_is_clipped_for_confident_mistakes() -> None:
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert math.isfinite(log_loss([0, 1], [1.0, 0.0]))


def test_roc_auc_counts_ties_as_half() -> None:
    # positive/negative pairs: (0.6,0.1)=1 (0.6,0.6)=0.5 (0.8,0.1)=1 (0.8,0.6)=1 (0.4,0.1)=1 (0.4,0.6)=0
    assert roc_auc(Y, P) == pytest.approx(4.5 / 6)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1], [0.2, 0.3, 0.9]) == 1.0
    assert roc_auc([0, 0, 1], [0.9, 0.3, 0.1]) == 0.0


def test_roc_auc_is_nan_with_one_class() -> None:
    assert math.isnan(roc_auc([1, 1], [0.2, 0.7]))
    assert compute_metrics([1, 1], [0.2, 0.7])["roc_auc"] is None


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    matrix = confusion_matrix(Y, P)
    # true cat: #0 -> cat, #1 -> dog; true dog: #4 -> cat, #2 #3 -> dog
    assert matrix.tolist() == [[1, 1], [1, 2]]


def test_per_class_precision_recall_f1() -> None:
    # Y, P give the confusion matrix [[1, 1], [1, 2]].
    report = per_class_report(Y, P)
    assert report["cat"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report["dog"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert type(report["dog"]["support"]) is int and type(report["dog"]["f1"]) is float
    # Nothing predicted as dog (matrix [[3, 0], [2, 0]]): precision has no denominator and is
    # reported as 0, not NaN.
    assert confusion_matrix([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5]).tolist() == [[3, 0], [2, 0]]
    empty = per_class_report([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert empty["dog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert empty["cat"]["precision"] == pytest.approx(3 / 5)


def test_roc_curve_points() -> None:
    fpr, tpr, thresholds = roc_curve(Y, P)
    # thresholds 0.8: 1 dog found; 0.6: 2 dogs + 1 cat; 0.4: 3 dogs + 1 cat; 0.1: everything
    assert fpr.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.0])
    assert tpr.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    assert thresholds[0] == np.inf
    assert thresholds[1:].tolist() == [0.8, 0.6, 0.4, 0.1]
    # The trapezoid area under these points is the rank AUC.
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(Y, P))


def test_compute_metrics_is_json_ready() -> None:
    metrics = compute_metrics(Y, P)
    assert metrics["examples"] == 5
    assert metrics["class_names"] == ["cat", "dog"]
    assert metrics["confusion_matrix"] == [[1, 1], [1, 2]]
    assert metrics["roc_curve"]["thresholds"][0] is None  # +inf is not valid JSON
    assert set(metrics["per_class"]) == {"cat", "dog"}


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        accuracy([0, 1], [0.5])
    with pytest.raises(ValueError):
        accuracy([], [])
    with pytest.raises(ValueError):
        accuracy([2], [0.5])


def test_one_class_roc_curve_has_zero_rates_not_nan() -> None:
    fpr, tpr, thresholds = roc_curve([1, 1, 1], [0.2, 0.7, 0.7])
    assert fpr.tolist() == [0.0, 0.0, 0.0]
    assert tpr.tolist() == pytest.approx([0.0, 2 / 3, 1.0])
    assert thresholds[1:].tolist() == [0.7, 0.2]
    fpr, tpr, _ = roc_curve([0, 0], [0.2, 0.7])
    assert fpr.tolist() == [0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.0, 0.0]


def test_compute_metrics_keys_and_shapes_are_the_stored_format() -> None:
    metrics = compute_metrics(Y, P)
    assert list(metrics) == [
        "examples",
        "threshold",
        "accuracy",
        "log_loss",
        "roc_auc",
        "class_names",
        "confusion_matrix",
        "per_class",
        "roc_curve",
    ]
    assert metrics["threshold"] == 0.5
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["per_class"]["cat"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert set(metrics["roc_curve"]) == {"fpr", "tpr", "thresholds"}
    assert metrics["roc_curve"]["thresholds"] == [None, 0.8, 0.6, 0.4, 0.1]
    assert len(metrics["roc_curve"]["fpr"]) == len(metrics["roc_curve"]["tpr"]) == 5
    # Plain Python values only: the dict goes straight into json.dumps (no NaN, no numpy types).
    text = json.dumps(metrics, allow_nan=False)
    assert json.loads(text) == metrics


def _reference_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _reference_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Probability that a random dog scores above a random cat, ties counting half."""
    dogs, cats = p[y == 1], p[y == 0]
    wins = (dogs[:, None] > cats[None, :]).sum() + 0.5 * (dogs[:, None] == cats[None, :]).sum()
    return float(wins / (dogs.size * cats.size))


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_plain_definitions_on_random_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 2)  # rounded: plenty of ties
    p[:5] = [0.0, 1.0, 0.5, 0.5, 1e-9]
    metrics = compute_metrics(y, p)
    assert metrics["accuracy"] == pytest.approx(float(np.mean((p > 0.5) == y)))
    assert metrics["log_loss"] == pytest.approx(_reference_log_loss(y, p), rel=1e-12)
    assert metrics["roc_auc"] == pytest.approx(_reference_auc(y, p), rel=1e-12)
    distinct = np.unique(p).size
    assert len(metrics["roc_curve"]["thresholds"]) == distinct + 1  # no points dropped
    assert np.sum(confusion_matrix(y, p)) == 200


def test_non_finite_probabilities_are_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        compute_metrics([0, 1], [0.2, float("nan")])
