"""PNG charts for the training report, drawn with matplotlib's Agg canvas (no display needed).

`matplotlib.figure.Figure` is used directly instead of pyplot: no global figure state, no backend
selection, nothing left open between runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_learning_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation; a dashed line where fine-tuning starts."""
    figure = Figure(figsize=(11, 4.2), dpi=100)
    epochs = [int(row["epoch"]) for row in history]
    fine_tune_start = next((int(row["epoch"]) for row in history if row.get("phase") == "fine-tune"), None)
    for axis, metric, title in (
        (figure.add_subplot(1, 2, 1), "loss", "Loss (binary cross-entropy)"),
        (figure.add_subplot(1, 2, 2), "accuracy", "Accuracy"),
    ):
        for prefix, label, style in (("", "train", "-o"), ("val_", "validation", "-s")):
            values = [row.get(prefix + metric) for row in history]
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], style, markersize=3, label=label)
        if fine_tune_start is not None:
            axis.axvline(fine_tune_start - 0.5, color="gray", linestyle="--", label="fine-tuning starts")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    """Counts with row-normalized shading (rows = true class, columns = predicted class)."""
    figure = Figure(figsize=(4.8, 4.2), dpi=100)
    axis = figure.add_subplot(1, 1, 1)
    totals = [max(sum(row), 1) for row in matrix]
    shares = [[count / total for count in row] for row, total in zip(matrix, totals, strict=True)]
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if shares[i][j] > 0.5 else "black"
            axis.text(j, i, f"{count}\n{shares[i][j]:.1%}", ha="center", va="center", color=color)
    ticks = list(range(len(class_names)))
    axis.set_xticks(ticks, list(class_names))
    axis.set_yticks(ticks, list(class_names))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("Confusion matrix")
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_roc_curve(fpr: Sequence[float], tpr: Sequence[float], auc: float | None, path: Path) -> Path:
    figure = Figure(figsize=(4.8, 4.5), dpi=100)
    axis = figure.add_subplot(1, 1, 1)
    label = f"model (AUC = {auc:.4f})" if auc is not None else "model"
    axis.plot(list(fpr), list(tpr), label=label)
    axis.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_xlabel("false positive rate (cats called dog)")
    axis.set_ylabel("true positive rate (dogs found)")
    axis.set_title("ROC curve (positive class: dog)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_reliability(calibration: dict[str, Any], path: Path) -> Path:
    """Reliability diagram: the accuracy of the predicted class against its confidence, per bin
    (`training.crossval.calibration_table`), with each bin's photo count."""
    bins = calibration["bins"]
    figure = Figure(figsize=(4.8, 4.5), dpi=100)
    axis = figure.add_subplot(1, 1, 1)
    axis.plot([0.5, 1], [0.5, 1], linestyle="--", color="gray", label="perfectly calibrated")
    confidence = [b["confidence"] for b in bins]
    axis.plot(
        confidence, [b["accuracy"] for b in bins], marker="o", label=f"model (ECE {calibration['ece']:.4f})"
    )
    for b in bins:
        place = (b["confidence"], b["accuracy"])
        axis.annotate(
            str(b["count"]), place, textcoords="offset points", xytext=(0, -12), ha="center", fontsize=7
        )
    axis.set_xlim(0.5, 1.0)
    axis.set_ylim(0.4, 1.02)
    axis.set_xlabel("confidence of the predicted class (out of fold)")
    axis.set_ylabel("share of those predictions that were right")
    axis.set_title("Reliability (photo counts per bin)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path
