"""The pretrained recipe: ImageNet EfficientNet-Lite features, a logistic head chosen by cross-validation,
and the pet score from the nearest training photos.

1. Each member backbone runs once over the photos and over their mirror images (augmentation), at its
   own input size (training/features.py). Several members are concatenated: one feature vector, one head.
2. The head is logistic regression on the transformed, standardized features. Its C is chosen by
   repeated stratified k-fold cross-validation over the photos it is fitted on (training/crossval.py);
   the out-of-fold predictions are the run's honest figures. Then the head is fitted on all of them.
   `fit_on="all"` (the presets) fits on train/ and validation/ together: validation figures of that
   model are in-sample, and only the cross-validated ones describe new photos.
3. The pet score (training/ood.py) is the mean cosine similarity of the photo's features to its
   nearest fitted photos; its threshold is the `ood_quantile` of the fitted photos' own scores, each
   scored without itself.
4. Optional, one member and `fit_on="train"`: end-to-end fine-tuning from that head with BatchNorm
   frozen, a cosine learning-rate schedule with warm-up and flip/crop/brightness/contrast
   augmentation, kept only if validation log loss improves.

One exported graph: pixels -> members -> features -> [P(dog), pet_score].
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training.config import TrainConfig
from training.crossval import Head, calibration_table, cross_validate, fit_head, folds_for
from training.data import LoadedDataset, SplitData
from training.errors import ConfigError
from training.features import FeatureTransform, Member, extract, make_member, progress_bar, transform
from training.metrics import log_loss
from training.ood import PetScore, PetSignal, fit_pet_signal

logger = logging.getLogger("catdog.training.pretrained")


@dataclass
class FitPhotos:
    """The photos the head is fitted on (and, `fit_on="train"`, the held-out validation photos)."""

    images: np.ndarray
    labels: np.ndarray
    held_out: SplitData | None
    description: str


def fit_photos(dataset: LoadedDataset, fit_on: str) -> FitPhotos:
    train = dataset.splits["train"]
    val = dataset.splits.get("validation")
    if fit_on == "all" and val is not None:
        return FitPhotos(
            np.concatenate([train.images, val.images]),
            np.concatenate([train.labels, val.labels]),
            None,
            f"train + validation ({len(train.labels) + len(val.labels)} photos)",
        )
    return FitPhotos(train.images, train.labels, val, f"train ({len(train.labels)} photos)")


@dataclass
class PretrainedResult:
    model: Any  # keras.Model: pixels -> [P(dog) [N, 1], pet_score [N, 1]]
    members: list[Member]
    head: Head
    signal: PetSignal
    fit_scores: np.ndarray  # pet scores of the fitted photos, each without itself
    fit_labels: np.ndarray
    cross_validation: dict[str, Any]  # summary, out-of-fold p(dog), calibration
    held_out_p_dog: np.ndarray | None  # fit_on="train": the validation photos' P(dog)
    held_out_pet: np.ndarray | None
    fine_tune: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    # A few fitted photos with what the head and the pet signal answered for them: the exported
    # graph must answer the same (checked before anything is written).
    sample: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def features_of(
    members: list[Member], images: np.ndarray, config: TrainConfig, *, mirror: bool, what: str
) -> np.ndarray:
    return np.concatenate(
        [extract(member, images, config.batch_size, mirror=mirror, what=what) for member in members], axis=1
    )


def train_pretrained(config: TrainConfig, dataset: LoadedDataset) -> PretrainedResult:
    photos = fit_photos(dataset, config.fit_on)
    members = [make_member(name, size, config.input_size, config.weights) for name, size in config.members]
    raw = features_of(members, photos.images, config, mirror=False, what=photos.description)
    mirrored = (
        features_of(members, photos.images, config, mirror=True, what=photos.description)
        if config.augment
        else None
    )
    x = transform(raw, config.head_features)
    x_mirrored = None if mirrored is None else transform(mirrored, config.head_features)

    splits = folds_for(photos.labels, config.cv_folds, config.cv_repeats, config.seed)
    bar = progress_bar(len(splits), f"cross-validating the head over {len(config.head_c)} C values", "fold")
    cv = cross_validate(
        x, photos.labels, splits, config.head_c, mirrored=x_mirrored, repeats=config.cv_repeats, progress=bar
    )
    c = cv.best_c
    out_of_fold = cv.predictions[c].mean(axis=0)  # each photo's out-of-fold P(dog), averaged over repeats
    summary = cv.summary()
    logger.info(
        "head: C=%g, cross-validated log loss %.4f [%.4f, %.4f], accuracy %.4f",
        c,
        summary["log_loss"]["mean"],
        summary["log_loss"]["low"],
        summary["log_loss"]["high"],
        summary["accuracy"]["mean"],
    )
    fit_x = x if x_mirrored is None else np.concatenate([x, x_mirrored])
    fit_y = photos.labels if x_mirrored is None else np.concatenate([photos.labels, photos.labels])
    head = fit_head(fit_x, fit_y, c)
    signal, fit_scores = fit_pet_signal(raw, k=config.pet_neighbours, quantile=config.ood_quantile)
    logger.info(
        "pet score: %d reference photos, threshold %.4f (the %g quantile of their own scores)",
        len(signal.reference),
        signal.threshold,
        config.ood_quantile,
    )

    fine_tune: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    if config.fine_tune_epochs > 0:
        if photos.held_out is None or len(members) != 1:
            raise ConfigError("--fine-tune-epochs needs one backbone and --fit-on train (validation decides)")
        fine_tune, history, tuned = fine_tune_member(members[0], head, photos, config)
        if tuned is not None:
            head = tuned
            raw = features_of(members, photos.images, config, mirror=False, what="fitted photos, fine-tuned")
            signal, fit_scores = fit_pet_signal(raw, k=config.pet_neighbours, quantile=config.ood_quantile)

    model = assemble(members, head, signal, config)
    held_p = held_pet = None
    if photos.held_out is not None:
        held_raw = features_of(members, photos.held_out.images, config, mirror=False, what="validation")
        held_p = head.predict(transform(held_raw, config.head_features))
        held_pet = signal.score(held_raw)
    cross_validation = {
        **summary,
        "fitted_on": photos.description,
        "out_of_fold_p_dog": out_of_fold,
        "calibration": calibration_table(photos.labels, out_of_fold),
    }
    return PretrainedResult(
        model,
        members,
        head,
        signal,
        fit_scores,
        photos.labels,
        cross_validation,
        held_p,
        held_pet,
        fine_tune,
        history,
        (photos.images[:8], head.predict(transform(raw[:8], config.head_features)), fit_scores[:8]),
    )


def assemble(members: list[Member], head: Head, signal: PetSignal, config: TrainConfig) -> keras.Model:
    """pixels [N, S, S, 3] -> [P(dog) [N, 1], pet_score [N, 1]]: one graph, float32 throughout."""
    inputs = keras.Input((config.input_size, config.input_size, 3), dtype="float32", name="pixels")
    features = [member.extractor(inputs)[0] for member in members]
    raw = features[0] if len(features) == 1 else layers.Concatenate(name="features")(features)
    x = FeatureTransform(config.head_features, name="head_features")(raw)
    dense = layers.Dense(1, name="head")
    logit = dense(x)
    dense.set_weights([head.coef.reshape(-1, 1), np.array([head.intercept], dtype=np.float32)])
    pet = PetScore(signal, name="pet_score")(raw)
    return keras.Model(inputs, [ClassProbabilities(name="probabilities")(logit), pet], name="catdog")


class ClassProbabilities(layers.Layer):  # type: ignore[misc]
    """Logit z [N, 1] -> [P(cat), P(dog)] = [sigmoid(-z), sigmoid(z)] [N, 2].

    Both from the logit: `1 - sigmoid(z)` would make the int8 converters quantize the sigmoid's output
    (a fixed 1/256 grid) on its way to the subtraction."""

    def call(self, logit: Any) -> Any:
        return keras.ops.sigmoid(keras.ops.concatenate([-logit, logit], axis=-1))


def _augmenter(seed: int) -> keras.Sequential:
    """Mirror, crop (zoom in up to 15%, then shift) and light changes of brightness and contrast: the
    views and exposures a photo of a pet may be taken with (pixels stay in 0-255)."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomZoom((-0.15, 0.0), fill_mode="reflect", seed=seed + 1),
            layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 2),
            layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 3),
            layers.RandomContrast(0.15, value_range=(0, 255), seed=seed + 4),
        ],
        name="augmentation",
    )


def _cosine_with_warmup(peak: float, steps: int) -> keras.optimizers.schedules.CosineDecay:
    """Up to `peak` over the first tenth of the steps, then down to zero along a cosine: the head starts
    fitted, so large early steps through a randomly ordered batch would only undo the backbone."""
    warmup = max(1, steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps - warmup), warmup_target=peak, warmup_steps=warmup
    )


def fine_tune_member(
    member: Member, head: Head, photos: FitPhotos, config: TrainConfig
) -> tuple[dict[str, Any], list[dict[str, Any]], Head | None]:
    """End-to-end training from the fitted head; the old weights come back unless validation log
    loss improves. Returns (report, history, the tuned head or None)."""
    assert photos.held_out is not None
    val = photos.held_out
    size = config.input_size
    inputs = keras.Input((size, size, 3), dtype="float32")
    x = _augmenter(config.seed)(inputs) if config.augment else inputs
    features, _ = member.extractor(x)
    dense = layers.Dense(1, activation="sigmoid", name="tuned_head")
    model = keras.Model(inputs, dense(FeatureTransform(config.head_features)(features)))
    dense.set_weights([head.coef.reshape(-1, 1), np.array([head.intercept], dtype=np.float32)])
    member.backbone.trainable = True
    for layer in member.backbone.layers:
        # BatchNorm stays frozen (and in inference mode: the backbone is called with training=False):
        # statistics from 32-image batches would wreck the ImageNet features.
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    saved = [np.array(v.numpy()) for v in member.backbone.weights]

    def validation_loss() -> float:
        raw = extract(member, val.images, config.batch_size, mirror=False, what="validation")
        weights, bias = dense.get_weights()
        tuned = Head(weights[:, 0].astype(np.float32), float(bias[0]), head.c)
        return float(log_loss(val.labels, tuned.predict(transform(raw, config.head_features))))

    before = validation_loss()
    steps = config.fine_tune_epochs * -(-len(photos.labels) // config.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(_cosine_with_warmup(config.fine_tune_lr, steps)),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    labels = photos.labels.astype(np.float32).reshape(-1, 1)
    data = (
        tf.data.Dataset.from_tensor_slices((photos.images, labels))
        .shuffle(len(labels), seed=config.seed)
        .batch(config.batch_size)
        .map(lambda a, b: (tf.cast(a, tf.float32), b))
    )
    logger.info(
        "fine-tuning %s end to end: %d epochs, lr up to %g (cosine with warm-up)",
        member.label,
        config.fine_tune_epochs,
        config.fine_tune_lr,
    )
    fit = model.fit(
        data, epochs=config.fine_tune_epochs, verbose=1 if sys.stdout.isatty() else 2, shuffle=False
    )
    history = [
        {
            "epoch": i + 1,
            "phase": "fine-tune",
            "loss": float(fit.history["loss"][i]),
            "accuracy": float(fit.history["accuracy"][i]),
        }
        for i in range(len(fit.history["loss"]))
    ]
    member.backbone.trainable = False
    after = validation_loss()
    kept = after < before
    report = {
        "epochs": config.fine_tune_epochs,
        "learning_rate": config.fine_tune_lr,
        "schedule": "cosine, 10% linear warm-up",
        "val_log_loss_before": before,
        "val_log_loss_after": after,
        "kept": kept,
    }
    logger.info(
        "fine-tuning %s: validation log loss %.4f -> %.4f (%s)",
        member.label,
        before,
        after,
        "kept" if kept else "discarded",
    )
    if not kept:
        for variable, value in zip(member.backbone.weights, saved, strict=True):
            variable.assign(value)
        return report, history, None
    weights, bias = dense.get_weights()
    return report, history, Head(weights[:, 0].astype(np.float32), float(bias[0]), head.c)
