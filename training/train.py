"""The fit loop for models trained with gradient descent from the start: the scratch CNNs and the
keras.applications transfer backbones (frozen phase, then the top of the backbone fine-tuned).

The epoch with the lowest validation loss, across both phases, is the one kept (Keras's
ModelCheckpoint with save_best_only). Seeds and TensorFlow op determinism make the same command
on the same CPU produce the same numbers.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.architectures import PREPROCESSING, TRANSFER_ARCHITECTURES, build_model, unfreeze_top
from training.config import TrainConfig
from training.data import LoadedDataset, SplitData
from training.weights import WeightsFile

logger = logging.getLogger("catdog.training.train")


@dataclass(frozen=True)
class FitResult:
    model: Any  # keras.Model: float pixels 0..255 -> P(dog) [N, 1]
    history: list[dict[str, Any]]
    best_epoch: int
    preprocessing: str


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


def _float(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _history_rows(
    history: Any, phase: str, first_epoch: int, rates: dict[int, float]
) -> list[dict[str, Any]]:
    values = history.history
    rows = []
    for index in range(len(values.get("loss", []))):
        epoch = first_epoch + index
        row: dict[str, Any] = {"epoch": epoch, "phase": phase}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in values:
                row[key] = _float(values[key][index])
        row["learning_rate"] = rates.get(epoch)
        rows.append(row)
    return rows


def best_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch ModelCheckpoint(save_best_only) kept: the first with the lowest val_loss."""
    best, epoch = math.inf, 0
    for row in history:
        loss = row.get("val_loss")
        if loss is not None and loss < best:
            best, epoch = loss, row["epoch"]
    return epoch


def fit(config: TrainConfig, dataset: LoadedDataset, weights: WeightsFile | None) -> FitResult:
    import keras

    train_split, val_split = dataset.splits["train"], dataset.splits["validation"]
    size = config.input_size
    built = build_model(
        config.arch, size, weights=weights.path if weights else None, augment=config.augment, seed=config.seed
    )
    model = built.model
    train_ds = make_tf_dataset(train_split, config.batch_size, shuffle=True, seed=config.seed)
    val_ds = make_tf_dataset(val_split, config.batch_size, shuffle=False, seed=config.seed)
    steps_per_epoch = math.ceil(len(train_split.labels) / config.batch_size)
    verbose = 1 if sys.stdout.isatty() else 2
    rates = _LearningRateLog()

    with tempfile.TemporaryDirectory(prefix="catdog-fit-") as scratch:
        best_file = str(Path(scratch) / "best.weights.h5")
        # One instance across both phases: its `best` carries over, so the epoch kept is the best
        # of the whole run.
        checkpoint = keras.callbacks.ModelCheckpoint(
            best_file, monitor="val_loss", save_best_only=True, save_weights_only=True
        )
        _compile(model, learning_rate_schedule(config, steps_per_epoch))
        phase1 = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            callbacks=[checkpoint, rates.callback()],
        )
        history = _history_rows(phase1, "train", 1, rates.rates)

        if built.backbone is not None and config.fine_tune_epochs > 0:
            # Phase 2 starts from phase 1's best epoch, with the top of the backbone unfrozen and a
            # learning rate small enough not to destroy the pretrained features.
            if Path(best_file).is_file():
                model.load_weights(best_file)
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
                callbacks=[checkpoint, rates.callback()],
            )
            history += _history_rows(phase2, "fine-tune", config.epochs + 1, rates.rates)
        if Path(best_file).is_file():
            model.load_weights(best_file)
    preprocessing = PREPROCESSING[config.arch]
    if config.arch in TRANSFER_ARCHITECTURES:
        preprocessing += f"; backbone weights {weights.source if weights else 'random'}"
    return FitResult(model, history, best_epoch(history), preprocessing)
