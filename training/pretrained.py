"""The pretrained recipe: ImageNet EfficientNet-Lite features + a logistic-regression head.

Stage 1 runs each backbone once over the photos (and over their mirror images, as augmentation),
then fits scikit-learn's LogisticRegression on the pooled features, choosing the inverse
regularization C by validation log loss. Deterministic, and minutes on 2 CPU cores.
Stage 2 (optional, one backbone): end-to-end fine-tuning from that head with BatchNorm frozen,
a low learning rate and flip/crop augmentation, kept only if validation log loss improves.

Several backbones make an ensemble: each gets its own head, and ONE exported graph averages their
probabilities (and their pet scores). The exported model returns [P(dog), pet_score]; pet_score is
the ImageNet head's probability of a cat or dog class (training/ood.py).
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
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from training.backbones.efficientnet_lite import get_variant
from training.backbones.packaged import WeightsSource
from training.config import TrainConfig
from training.data import LoadedDataset, SplitData
from training.metrics import accuracy, log_loss
from training.ood import PetProbability

logger = logging.getLogger("catdog.training.pretrained")


@dataclass
class Member:
    """One backbone of the model: pixels at the model's input size -> [features, pet score]."""

    name: str
    source: WeightsSource
    backbone: Any  # keras.Model: pixels at its own size -> [features, logits]
    extractor: Any  # keras.Model: pixels at the input size -> [features, pet_score]
    run: Any  # the extractor as one traced tf.function, reused for every pass over the photos
    head: Any = None  # keras Dense(1, sigmoid) on the features
    head_report: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainedResult:
    model: Any  # keras.Model: pixels -> [P(dog), pet_score]
    p_dog_val: np.ndarray  # as exported (views averaged when flip_tta)
    pet_val: np.ndarray
    pet_train: np.ndarray
    single_view_p_dog_val: np.ndarray | None
    members: list[Member]
    fine_tune: dict[str, Any] | None
    history: list[dict[str, Any]]


def _progress(total: int, what: str) -> Any:
    logger.info("%s: %d images", what, total)
    return keras.utils.Progbar(total, verbose=1 if sys.stdout.isatty() else 2, unit_name="image")


def make_member(backbone: Any, source: WeightsSource, input_size: int) -> Member:
    name = source.backbone
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="pixels")
    native = get_variant(name).image_size
    x = inputs
    if input_size != native:
        # An ensemble's members see the same uint8 image, resized in the graph to their own size.
        x = layers.Resizing(native, native, interpolation="bilinear", antialias=True, name=f"{name}_resize")(
            x
        )
    features, logits = backbone(x, training=False)
    pet = PetProbability(name=f"{name}_pet")(logits)
    extractor = keras.Model(inputs, [features, pet], name=f"{name}_extractor")
    run = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    return Member(name, source, backbone, extractor, run)


def extract(
    member: Member, images: np.ndarray, batch_size: int, *, mirror: bool, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, 1280], pet score [N]) of uint8 images, or of their mirror images."""
    features, pets = [], []
    bar = _progress(len(images), f"{member.name} features, {what}{' (mirrored)' if mirror else ''}")
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if mirror:
            batch = batch[:, :, ::-1]
        f, p = member.run(tf.constant(batch, dtype=tf.float32))
        features.append(np.asarray(f, dtype=np.float32))
        pets.append(np.asarray(p, dtype=np.float64).reshape(-1))
        bar.update(min(start + batch_size, len(images)))
    return np.concatenate(features), np.concatenate(pets)


def fit_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_views: list[np.ndarray],
    val_y: np.ndarray,
    grid: tuple[float, ...],
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Standardized logistic regression, C chosen by validation log loss; returns (w, b, report)
    with the standardization folded into w and b, so the head is one Dense layer on raw features."""

    scaler = StandardScaler().fit(train_x)
    scaled_train = scaler.transform(train_x)
    scaled_views = [scaler.transform(view) for view in val_views]
    losses: dict[str, float] = {}
    best: tuple[float, Any] | None = None
    for c in grid:
        model = LogisticRegression(C=c, max_iter=5000).fit(scaled_train, train_y)
        p = np.mean([model.predict_proba(view)[:, 1] for view in scaled_views], axis=0)
        loss = log_loss(val_y, p)
        losses[f"{c:g}"] = loss
        if best is None or loss < best[0]:
            best = (loss, model)
    assert best is not None
    chosen = best[1]
    coef = chosen.coef_[0] / scaler.scale_
    intercept = float(chosen.intercept_[0] - np.sum(chosen.coef_[0] * scaler.mean_ / scaler.scale_))
    report = {"C": float(chosen.C), "val_log_loss_by_C": losses, "features": int(train_x.shape[1])}
    return coef.astype(np.float32), intercept, report


def _set_head(member: Member, coef: np.ndarray, intercept: float) -> None:
    member.head = layers.Dense(1, activation="sigmoid", name=f"{member.name}_head")
    member.head.build((None, coef.shape[0]))
    member.head.set_weights([coef.reshape(-1, 1), np.array([intercept], dtype=np.float32)])


def assemble(members: list[Member], input_size: int) -> keras.Model:
    """pixels [N, S, S, 3] -> [P(dog) [N, 1], pet_score [N, 1]], members' outputs averaged."""
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="pixels")
    p_dogs, pets = [], []
    for member in members:
        features, pet = member.extractor(inputs)
        p_dogs.append(member.head(features))
        pets.append(pet)
    if len(members) == 1:
        return keras.Model(inputs, [p_dogs[0], pets[0]], name=members[0].name)
    p_dog = layers.Average(name="ensemble_p_dog")(p_dogs)
    pet = layers.Average(name="ensemble_pet_score")(pets)
    return keras.Model(inputs, [p_dog, pet], name="ensemble")


def _views(
    member: Member, images: np.ndarray, config: TrainConfig, what: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    views = [extract(member, images, config.batch_size, mirror=False, what=what)]
    if config.flip_tta:
        views.append(extract(member, images, config.batch_size, mirror=True, what=what))
    return views


def train_pretrained(
    config: TrainConfig, dataset: LoadedDataset, loaded: list[tuple[Any, WeightsSource]]
) -> PretrainedResult:
    """`loaded`: each backbone with its weights' source, from `packaged.load_backbone`."""
    train, val = dataset.splits["train"], dataset.splits["validation"]
    size = config.input_size
    members = [make_member(backbone, source, size) for backbone, source in loaded]
    p_views: list[np.ndarray] = []  # per member: [views, N_val]
    pet_val_members, pet_train_members = [], []
    for member in members:
        train_plain, train_pet = extract(member, train.images, config.batch_size, mirror=False, what="train")
        train_x, train_y = train_plain, train.labels
        if config.augment:  # the mirror image of a training photo is another training photo
            train_mirror, _ = extract(member, train.images, config.batch_size, mirror=True, what="train")
            train_x = np.concatenate([train_plain, train_mirror])
            train_y = np.concatenate([train.labels, train.labels])
        val_views = _views(member, val.images, config, "validation")
        coef, intercept, report = fit_head(
            train_x, train_y, [v[0] for v in val_views], val.labels, config.head_c
        )
        _set_head(member, coef, intercept)
        member.head_report = report
        logger.info(
            "%s head: C=%g, validation log loss %.4f",
            member.name,
            report["C"],
            min(report["val_log_loss_by_C"].values()),
        )
        p_views.append(np.stack([_sigmoid(v[0] @ coef + intercept) for v in val_views]))
        member.head_report["validation"] = _view_metrics(val.labels, p_views[-1])
        pet_val_members.append(np.mean([v[1] for v in val_views], axis=0))
        pet_train_members.append(train_pet)

    fine_tune = None
    history: list[dict[str, Any]] = []
    if config.fine_tune_epochs > 0:
        fine_tune, history, tuned = fine_tune_member(
            members[0], train, val, config, float(log_loss(val.labels, p_views[0].mean(axis=0)))
        )
        if tuned is not None:
            p_views[0], pet_val_members[0], pet_train_members[0] = tuned

    per_member = np.stack([views.mean(axis=0) for views in p_views])  # [members, N]
    single = np.stack([views[0] for views in p_views]).mean(axis=0) if config.flip_tta else None
    return PretrainedResult(
        model=assemble(members, size),
        p_dog_val=per_member.mean(axis=0),
        pet_val=np.mean(pet_val_members, axis=0),
        pet_train=np.mean(pet_train_members, axis=0),
        single_view_p_dog_val=single,
        members=members,
        fine_tune=fine_tune,
        history=history,
    )


def _view_metrics(labels: np.ndarray, views: np.ndarray) -> dict[str, Any]:
    """This member alone on validation: single view, and averaged with the mirror image if measured."""
    found = {"single_view": {"accuracy": accuracy(labels, views[0]), "log_loss": log_loss(labels, views[0])}}
    if len(views) > 1:
        mean = views.mean(axis=0)
        found["mirror_averaged"] = {"accuracy": accuracy(labels, mean), "log_loss": log_loss(labels, mean)}
    return found


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _augmenter(seed: int) -> keras.Sequential:
    """Mirror and crop (zoom in up to 15%, then shift): the views a photo of a pet may be taken from."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomZoom((-0.15, 0.0), fill_mode="reflect", seed=seed + 1),
            layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 2),
        ],
        name="augmentation",
    )


def fine_tune_member(
    member: Member, train: SplitData, val: SplitData, config: TrainConfig, baseline_loss: float
) -> tuple[dict[str, Any], list[dict[str, Any]], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """End-to-end training from the logistic head; the old weights come back unless it helps."""
    size = config.input_size
    inputs = keras.Input((size, size, 3), dtype="float32")
    x = _augmenter(config.seed)(inputs) if config.augment else inputs
    features, _ = member.extractor(x)
    model = keras.Model(inputs, member.head(features))
    member.backbone.trainable = True
    for layer in member.backbone.layers:
        # BatchNorm stays frozen (and in inference mode: the backbone is called with
        # training=False): statistics from 32-image batches would wreck the ImageNet features.
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    member.backbone.get_layer("imagenet_logits").trainable = False  # the pet score's head stays ImageNet's
    saved = [np.array(v.numpy()) for v in model.weights]
    model.compile(
        optimizer=keras.optimizers.Adam(config.fine_tune_lr),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    labels = train.labels.astype(np.float32).reshape(-1, 1)
    data = (
        tf.data.Dataset.from_tensor_slices((train.images, labels))
        .shuffle(len(labels), seed=config.seed)
        .batch(config.batch_size)
        .map(lambda a, b: (tf.cast(a, tf.float32), b))
    )
    logger.info(
        "fine-tuning %s end to end: %d epochs at lr %g",
        member.name,
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
    coef, intercept = (np.asarray(w) for w in member.head.get_weights())
    views = _views(member, val.images, config, "validation, fine-tuned")
    p_views = np.stack([_sigmoid(v[0] @ coef[:, 0] + intercept[0]) for v in views])
    tuned_loss = float(log_loss(val.labels, p_views.mean(axis=0)))
    kept = tuned_loss < baseline_loss
    report = {
        "epochs": config.fine_tune_epochs,
        "learning_rate": config.fine_tune_lr,
        "val_log_loss_before": baseline_loss,
        "val_log_loss_after": tuned_loss,
        "kept": kept,
    }
    logger.info(
        "fine-tuning %s: validation log loss %.4f -> %.4f (%s)",
        member.name,
        baseline_loss,
        tuned_loss,
        "kept" if kept else "discarded",
    )
    if not kept:
        for variable, value in zip(model.weights, saved, strict=True):
            variable.assign(value)
        return report, history, None
    _, train_pet = extract(member, train.images, config.batch_size, mirror=False, what="train, fine-tuned")
    return report, history, (p_views, np.mean([v[1] for v in views], axis=0), train_pet)
