"""Train a cat/dog classifier, evaluate it on the validation split and export it for the service.

A run writes everything into a hidden sibling of the output directory and renames it into place
at the very end, so the output path holds either the previous model or a complete new one, never
half an export. Seeds and TensorFlow op determinism make the same command on the same CPU produce
the same numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.architectures import (
    PREPROCESSING,
    TRANSFER_ARCHITECTURES,
    build_model,
    check_architecture,
    unfreeze_top,
)
from training.data import CLASS_NAMES, LoadedDataset, SplitData, discover, load_dataset
from training.errors import ConfigError
from training.evaluate import compute_metrics, format_metrics, predict_with_signature
from training.presets import DEFAULT_PRESET, PRESET_FOR_ARCH, PRESETS
from training.weights import WeightsFile, offline_from_env, resolve_weights

logger = logging.getLogger("catdog.training.train")

REPORT_DIR = "report"
EVALUATION_FILE = "evaluation.json"
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path
    output: Path
    preset: str
    arch: str
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    schedule: str = "cosine"
    warmup_epochs: int = 0
    fine_tune_epochs: int = 0
    fine_tune_lr: float = 1e-5
    augment: bool = True
    # Export a graph that averages each image with its mirror image (see training/export.py).
    flip_tta: bool = False
    weights: str | None = None
    offline: bool = False
    seed: int = 42
    val_fraction: float = 0.2
    limit_per_class: int | None = None
    version: str | None = None

    def validate(self) -> None:
        check_architecture(self.arch)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        minimum = 32 if self.arch in TRANSFER_ARCHITECTURES else 16
        if self.image_size < minimum:
            raise ConfigError(
                f"--image-size must be at least {minimum} for {self.arch}, got {self.image_size}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.fine_tune_epochs < 0 or self.warmup_epochs < 0:
            raise ConfigError("--fine-tune-epochs and warmup epochs cannot be negative")
        if self.learning_rate <= 0 or self.fine_tune_lr <= 0:
            raise ConfigError("learning rates must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.fine_tune_epochs and self.arch not in TRANSFER_ARCHITECTURES:
            raise ConfigError(f"--fine-tune-epochs needs a pretrained backbone; {self.arch} has none")
        if self.weights is not None and self.arch not in TRANSFER_ARCHITECTURES:
            raise ConfigError(f"--weights is for transfer backbones ({', '.join(TRANSFER_ARCHITECTURES)})")


def make_config(
    data_dir: Path | str, output: Path | str, preset: str | None = None, **overrides: Any
) -> TrainConfig:
    """Preset values, overridden by every non-None keyword (the command-line flags).

    Without an explicit preset the recipe for `arch` is used (`mobilenet` for mobilenet_v2, ...).
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if preset is None:
        arch = overrides.get("arch")
        preset = PRESET_FOR_ARCH.get(arch, DEFAULT_PRESET) if isinstance(arch, str) else DEFAULT_PRESET
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown training options: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {**PRESETS[preset], **overrides}
    if "offline" not in overrides:
        values["offline"] = offline_from_env()
    config = TrainConfig(data_dir=Path(data_dir), output=Path(output), preset=preset, **values)
    config.validate()
    return config


def _float(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


class BestWeights:
    """Keeps the weights of the epoch with the lowest val_loss, across both training phases."""

    def __init__(self) -> None:
        self.best = math.inf
        self.best_epoch = 0
        self._saved: list[tuple[Any, np.ndarray]] | None = None

    def callback(self) -> Any:
        import keras

        owner = self

        class _Track(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                val_loss = float((logs or {}).get("val_loss", math.nan))
                if math.isfinite(val_loss) and val_loss < owner.best:
                    owner.best = val_loss
                    owner.best_epoch = epoch + 1
                    # (variable, value) pairs: robust to weight order changes when layers are
                    # frozen or unfrozen between phases.
                    owner._saved = [(v, np.array(v.numpy())) for v in self.model.weights]

        return _Track()

    def restore(self) -> None:
        for variable, value in self._saved or []:
            variable.assign(value)


class _LearningRateLog:
    """Records the optimizer's learning rate at the end of each epoch (schedules change it)."""

    def __init__(self) -> None:
        self.rates: dict[int, float] = {}

    def callback(self) -> Any:
        import keras

        owner = self

        class _Log(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
                owner.rates[epoch + 1] = float(rate)

        return _Log()


def make_tf_dataset(split: SplitData, batch_size: int, *, shuffle: bool, seed: int) -> Any:
    """uint8 arrays -> batches of float32 pixels 0..255 (the model scales them itself)."""
    import tensorflow as tf

    labels = split.labels.astype(np.float32).reshape(-1, 1)
    dataset = tf.data.Dataset.from_tensor_slices((split.images, labels))
    if shuffle:
        # Seeded and reshuffled every epoch; with op determinism the order repeats run to run.
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Any:
    """Cosine decay over the whole first phase, after an optional linear warm-up."""
    import keras

    if config.schedule == "constant":
        return config.learning_rate
    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs * steps_per_epoch, max(total - 1, 0))
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate * 0.1,
        decay_steps=total - warmup,
        alpha=0.01,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def _compile(model: Any, learning_rate: Any) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )


def _history_rows(
    history: Any, phase: str, first_epoch: int, rates: dict[int, float]
) -> list[dict[str, Any]]:
    values = history.history
    epochs = len(values.get("loss", []))
    rows = []
    for index in range(epochs):
        epoch = first_epoch + index
        row: dict[str, Any] = {"epoch": epoch, "phase": phase}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in values:
                row[key] = _float(values[key][index])
        row["learning_rate"] = rates.get(epoch)
        rows.append(row)
    return rows


def default_version(arch: str, data_hash: str, now: dt.datetime) -> str:
    return f"{arch}-{now:%Y%m%d}-{data_hash[:8]}"


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow_version": tf.__version__, "keras_version": keras.__version__}


def _replace_dir(source: Path, target: Path) -> None:
    """Move the finished `source` to `target`, replacing an older model there."""
    if os.path.ismount(target):
        _replace_contents(source, target)
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


def _replace_contents(source: Path, target: Path) -> None:
    """For a target that cannot be renamed (a mounted volume): swap its contents, metadata last.

    The service only treats a directory holding metadata.json as a model, so a crash part-way
    leaves "no model" rather than a mismatched one.
    """
    from training.export import METADATA_FILE

    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    children = sorted(source.iterdir(), key=lambda child: child.name == METADATA_FILE)
    for child in children:
        shutil.move(str(child), str(target / child.name))
    shutil.rmtree(source, ignore_errors=True)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run a full training; returns the evaluation report (also written to report/evaluation.json)."""
    config.validate()
    # Cheap checks first: a wrong data path or missing weights fail before any decoding or training.
    discover(config.data_dir, val_fraction=config.val_fraction, seed=config.seed)
    weights: WeightsFile | None = None
    if config.arch in TRANSFER_ARCHITECTURES:
        weights = resolve_weights(config.arch, config.image_size, config.weights, offline=config.offline)

    import keras
    import tensorflow as tf

    from training.export import build_serving_function, export_saved_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    dataset = load_dataset(
        config.data_dir,
        config.image_size,
        val_fraction=config.val_fraction,
        seed=config.seed,
        limit=config.limit_per_class,
    )
    train_split, val_split = dataset.splits["train"], dataset.splits["validation"]
    logger.info("data: %s (layout %s), counts %s", dataset.root, dataset.layout, dataset.counts())

    built = build_model(
        config.arch,
        config.image_size,
        weights=weights.path if weights else None,
        augment=config.augment,
        seed=config.seed,
    )
    model = built.model
    train_ds = make_tf_dataset(train_split, config.batch_size, shuffle=True, seed=config.seed)
    val_ds = make_tf_dataset(val_split, config.batch_size, shuffle=False, seed=config.seed)
    steps_per_epoch = math.ceil(len(train_split.labels) / config.batch_size)
    verbose = 1 if sys.stdout.isatty() else 2
    best = BestWeights()
    rates = _LearningRateLog()

    _compile(model, learning_rate_schedule(config, steps_per_epoch))
    phase1 = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        callbacks=[best.callback(), rates.callback()],
    )
    history = _history_rows(phase1, "train", 1, rates.rates)

    if built.backbone is not None and config.fine_tune_epochs > 0:
        # Phase 2 starts from phase 1's best epoch, with the top of the backbone unfrozen and a
        # learning rate small enough not to destroy the pretrained features.
        best.restore()
        unfrozen = unfreeze_top(built.backbone)
        logger.info("fine-tuning: %d backbone layers unfrozen, lr %g", unfrozen, config.fine_tune_lr)
        _compile(model, config.fine_tune_lr)
        phase2 = model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=config.epochs,
            epochs=config.epochs + config.fine_tune_epochs,
            verbose=verbose,
            shuffle=False,
            callbacks=[best.callback(), rates.callback()],
        )
        history += _history_rows(phase2, "fine-tune", config.epochs + 1, rates.rates)
    best.restore()

    # Measure through the same uint8 -> probabilities function the SavedModel exports.
    serve = build_serving_function(model, config.image_size, config.flip_tta)
    p_dog = predict_with_signature(serve, val_split.images)
    metrics = compute_metrics(val_split.labels, p_dog)
    if config.flip_tta:
        # What the mirror-averaging adds, for the report: the same model on single views.
        single = predict_with_signature(build_serving_function(model, config.image_size), val_split.images)
        single_metrics = compute_metrics(val_split.labels, single)
        metrics["single_view"] = {key: single_metrics[key] for key in ("accuracy", "log_loss", "roc_auc")}
    return _write_outputs(
        config,
        dataset,
        weights=weights,
        model=model,
        history=history,
        best_epoch=best.best_epoch,
        metrics=metrics,
        export_saved_model=export_saved_model,
    )


def _write_outputs(
    config: TrainConfig,
    dataset: LoadedDataset,
    *,
    weights: WeightsFile | None,
    model: Any,
    history: list[dict[str, Any]],
    best_epoch: int,
    metrics: dict[str, Any],
    export_saved_model: Any,
) -> dict[str, Any]:
    from training.plots import plot_confusion_matrix, plot_learning_curves, plot_roc_curve

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    version = config.version or default_version(config.arch, dataset.data_hash, now)
    output = config.output.expanduser().resolve()
    training_info = {
        "preset": config.preset,
        "data_dir": str(dataset.root),
        "layout": dataset.layout,
        "validation_source": dataset.validation_source,
        "val_fraction": config.val_fraction,
        "limit_per_class": config.limit_per_class,
        "counts": dataset.counts(),
        "skipped": dataset.skipped_counts(),
        "data_hash": dataset.data_hash,
        "epochs": config.epochs,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "fine_tune_epochs": config.fine_tune_epochs if config.arch in TRANSFER_ARCHITECTURES else 0,
        "fine_tune_lr": config.fine_tune_lr,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "schedule": config.schedule,
        "warmup_epochs": config.warmup_epochs,
        "optimizer": "adam",
        "seed": config.seed,
        "augmentation": config.augment,
        "flip_tta": config.flip_tta,
        "weights": weights.source if weights else "none (trained from scratch)",
    }
    summary_metrics = {
        "split": "validation",
        "accuracy": metrics["accuracy"],
        "log_loss": metrics["log_loss"],
        "roc_auc": metrics["roc_auc"],
        "confusion_matrix": metrics["confusion_matrix"],
        "per_class": {
            name: {key: stats[key] for key in ("precision", "recall", "f1", "support")}
            for name, stats in metrics["per_class"].items()
        },
    }
    metadata = {
        "name": output.name,
        "version": version,
        "architecture": config.arch,
        "class_names": list(CLASS_NAMES),
        "image_size": config.image_size,
        "input": "uint8 RGB batch [N, H, W, 3]; resized to image_size x image_size in the graph",
        "output": "probabilities [N, 2] in class_names order",
        "preprocessing": (
            "photos decoded with catdog.imaging.load_model_input (EXIF orientation, RGB, bilinear "
            f"squash-resize to {config.image_size}x{config.image_size}); then {PREPROCESSING[config.arch]}"
        ),
        "training": training_info,
        "metrics": summary_metrics,
        "created_at": now.isoformat().replace("+00:00", "Z"),
        **_versions(),
    }
    evaluation = {
        "name": output.name,
        "version": version,
        "architecture": config.arch,
        "split": "validation",
        "metrics": metrics,
        "best_epoch": best_epoch,
        "history": history,
        "counts": dataset.counts(),
        "skipped_counts": dataset.skipped_counts(),
        "skipped": dataset.skipped_json(),
        "data_hash": dataset.data_hash,
        "training": training_info,
    }

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        export_saved_model(model, staging, config.image_size, metadata, flip_tta=config.flip_tta)
        report = staging / REPORT_DIR
        report.mkdir()
        (report / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
        plot_learning_curves(history, report / "learning_curves.png")
        plot_confusion_matrix(metrics["confusion_matrix"], list(CLASS_NAMES), report / "confusion_matrix.png")
        curve = metrics["roc_curve"]
        plot_roc_curve(curve["fpr"], curve["tpr"], metrics["roc_auc"], report / "roc_curve.png")
        _replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("model %s written to %s", version, output)
    print(f"model {version} written to {output}")
    print(format_metrics(metrics))
    sys.stdout.flush()
    return evaluation
