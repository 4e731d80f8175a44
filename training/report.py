"""Writing a finished run: SavedModel + metadata.json + report/ (evaluation.json and plots),
assembled in a hidden sibling directory and swapped into place at the very end, so the output
path holds either the previous model or a complete new one, never half an export.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from catdog.contract import CLASS_NAMES, METADATA_FILE
from catdog.cpus import process_cpus
from training.config import TrainConfig
from training.data import LoadedDataset
from training.export import export_saved_model
from training.metrics import format_metrics
from training.plots import plot_confusion_matrix, plot_learning_curves, plot_reliability, plot_roc_curve

logger = logging.getLogger("catdog.training.report")

REPORT_DIR = "report"
EVALUATION_FILE = "evaluation.json"
CROSS_VALIDATION_FILE = "cross_validation.md"


def default_version(arch: str, data_hash: str, now: dt.datetime) -> str:
    short = arch.replace("efficientnet_", "").replace("+", "-") if "+" in arch else arch
    return f"{short.replace('@', '-')}-{now:%Y%m%d}-{data_hash[:8]}"


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow_version": tf.__version__, "keras_version": keras.__version__}


def summary_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics block of metadata.json (the full one, with curves, is in report/)."""
    summary = {
        "split": metrics.get("split", "validation"),
        "accuracy": metrics["accuracy"],
        "log_loss": metrics["log_loss"],
        "roc_auc": metrics["roc_auc"],
        "confusion_matrix": metrics["confusion_matrix"],
        "per_class": {
            name: {key: stats[key] for key in ("precision", "recall", "f1", "support")}
            for name, stats in metrics["per_class"].items()
        },
    }
    if "single_view" in metrics:
        summary["single_view"] = metrics["single_view"]
    return summary


def format_cross_validation(cv: dict[str, Any], arch: str) -> str:
    """The run's cross-validation as Markdown: each C's mean out-of-fold log loss, the chosen C's
    figures with their intervals, and the reliability diagram's bins."""
    low_high = "{mean:.4f} [{low:.4f}, {high:.4f}]"
    accuracy = cv["accuracy"]
    lines = [
        f"# Cross-validation: {arch}",
        "",
        f"{cv['repeats']} x {cv['folds']}-fold stratified cross-validation over {cv['fitted_on']}: each "
        "photo's answer comes from a head fitted without it. The head is then fitted on all of them.",
        "",
        "| C | mean out-of-fold log loss |",
        "|---|---|",
    ]
    for c, loss in cv["by_C"].items():
        chosen = c == f"{cv['C']:g}"
        lines.append(f"| {'**' + c + '** (chosen)' if chosen else c} | {loss:.4f} |")
    lines += [
        "",
        f"At C {cv['C']:g}: log loss {low_high.format(**cv['log_loss'])}, accuracy "
        f"{100 * accuracy['mean']:.2f}% [{100 * accuracy['low']:.2f}, {100 * accuracy['high']:.2f}] "
        f"(95% intervals over the {cv['repeats'] * cv['folds']} folds).",
    ]
    calibration = cv.get("calibration")
    if calibration:
        lines += [
            "",
            f"Reliability ([reliability.png](reliability.png)); expected calibration error "
            f"{calibration['ece']:.4f}:",
            "",
            "| confidence (mean P of the answered class) | accuracy | photos |",
            "|---|---|---|",
        ]
        for b in calibration["bins"]:
            lines.append(f"| {b['confidence']:.4f} | {b['accuracy']:.4f} | {b['count']} |")
    return "\n".join(lines) + "\n"


def write_run(
    config: TrainConfig,
    dataset: LoadedDataset,
    *,
    model: Any,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    metadata: dict[str, Any],
    evaluation: dict[str, Any],
    started: float,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export `model` with `metadata` (plus what every run records) and the report; returns the
    evaluation report as written. `calibration` (crossval.calibration_table) adds a reliability diagram;
    `started` (time.monotonic() at the run's start) records its wall time up to the export."""

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    version = config.version or default_version(config.arch, dataset.data_hash, now)
    output = config.output.expanduser().resolve()
    data_info = {
        "data_dir": str(dataset.root),
        "layout": dataset.layout,
        "validation_source": dataset.validation_source,
        "counts": dataset.counts(),
        "skipped": dataset.skipped_counts(),
        "data_hash": dataset.data_hash,
    }
    training = {
        "config": config.recorded(),
        "data": data_info,
        **metadata.get("training", {}),
        "wall_seconds": round(time.monotonic() - started, 1),
        "cpus": process_cpus().count,
    }
    full_metadata = {
        "name": output.name,
        "version": version,
        "architecture": config.arch,
        "class_names": list(CLASS_NAMES),
        "preset": config.preset,
        "input": "uint8 RGB batch [N, H, W, 3]; resized to image_size x image_size in the graph",
        "output": "probabilities [N, 2] in class_names order",
        **metadata,
        "training": training,
        "metrics": summary_metrics(metrics),
        "created_at": now.isoformat().replace("+00:00", "Z"),
        **library_versions(),
    }
    full_evaluation = {
        "name": output.name,
        "version": version,
        "architecture": config.arch,
        "split": metrics.get("split", "validation"),
        "metrics": metrics,
        "history": history,
        "counts": dataset.counts(),
        "skipped_counts": dataset.skipped_counts(),
        "skipped": dataset.skipped_json(),
        "data_hash": dataset.data_hash,
        **evaluation,
        "training": training,
    }

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        export_saved_model(model, staging, config.input_size, full_metadata, flip_tta=config.flip_tta)
        report = staging / REPORT_DIR
        report.mkdir()
        text = json.dumps(full_evaluation, indent=2, default=str) + "\n"
        (report / EVALUATION_FILE).write_text(text, encoding="utf-8")
        if history:
            plot_learning_curves(history, report / "learning_curves.png")
        plot_confusion_matrix(metrics["confusion_matrix"], list(CLASS_NAMES), report / "confusion_matrix.png")
        curve = metrics["roc_curve"]
        plot_roc_curve(curve["fpr"], curve["tpr"], metrics["roc_auc"], report / "roc_curve.png")
        if calibration is not None:
            plot_reliability(calibration, report / "reliability.png")
        if "cross_validation" in evaluation:
            text = format_cross_validation(evaluation["cross_validation"], config.arch)
            (report / CROSS_VALIDATION_FILE).write_text(text, encoding="utf-8")
        replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("model %s written to %s", version, output)
    print(f"model {version} written to {output}")
    print(f"trained in {training['wall_seconds'] / 60:.1f} minutes on {training['cpus']} CPUs")
    print(format_metrics(metrics))
    return full_evaluation


def replace_dir(source: Path, target: Path) -> None:
    """Move the finished `source` to `target`, replacing an older model there."""
    if os.path.ismount(target):
        replace_contents(source, target)
        return
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(backup)
    try:
        source.rename(target)
    except OSError:
        if backup is not None:
            backup.rename(target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def replace_contents(source: Path, target: Path) -> None:
    """For a target that cannot be renamed (a mounted volume): swap its contents, metadata last.

    The service only treats a directory holding metadata.json as a model, so a crash part-way
    leaves "no model" rather than a mismatched one.
    """
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    children = sorted(source.iterdir(), key=lambda child: child.name == METADATA_FILE)
    for child in children:
        shutil.move(str(child), str(target / child.name))
    shutil.rmtree(source, ignore_errors=True)
