"""One training run from start to finish: check inputs, decode the photos once, run the recipe
(the pretrained head, or the gradient-descent fit loop), measure, export.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from catdog.contract import PET_SCORE, PROBABILITIES
from catdog.imaging import load_model_input
from training.architectures import TRANSFER_ARCHITECTURES
from training.backbones.packaged import WeightsSource, load_backbone
from training.config import TrainConfig, backbones, is_pretrained
from training.data import MAX_PIXELS, LoadedDataset, discover, load_dataset
from training.evaluate import predict_with_signature
from training.export import build_serving_function
from training.metrics import compute_metrics
from training.ood import METHOD, choose_threshold, reference_photos
from training.pretrained import train_pretrained
from training.report import write_run
from training.train import fit
from training.weights import WeightsFile, resolve_weights

logger = logging.getLogger("catdog.training.pipeline")

_DECODING = (
    "photos decoded with catdog.imaging.load_model_input (EXIF orientation, RGB, bilinear "
    "squash-resize to {s}x{s})"
)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run a full training; returns the evaluation report (also written to report/evaluation.json)."""
    # Cheap checks first: a wrong data path or missing weights fail before any decoding or training.
    found = discover(config.data_dir, val_fraction=config.val_fraction, seed=config.seed)
    weights: WeightsFile | None = None
    if config.arch in TRANSFER_ARCHITECTURES:
        weights = resolve_weights(config.arch, config.input_size, config.weights, offline=config.offline)

    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    backbones_loaded = []
    if is_pretrained(config.arch):
        # Converted (and cached) now, so a missing package or a bad file fails before decoding.
        backbones_loaded = [load_backbone(name, config.weights) for name in backbones(config.arch)]

    dataset = load_dataset(
        config.data_dir,
        config.input_size,
        val_fraction=config.val_fraction,
        seed=config.seed,
        limit=config.limit_per_class,
        found=found,
    )
    logger.info("data: %s (layout %s), counts %s", dataset.root, dataset.layout, dataset.counts())
    if backbones_loaded:
        return _train_pretrained(config, dataset, backbones_loaded)
    return _train_fitted(config, dataset, weights)


def _train_fitted(config: TrainConfig, dataset: LoadedDataset, weights: WeightsFile | None) -> dict[str, Any]:

    result = fit(config, dataset, weights)
    val = dataset.splits["validation"]
    # Measure through the same uint8 -> probabilities function the SavedModel exports.
    serve = build_serving_function(result.model, config.input_size, config.flip_tta)
    metrics = compute_metrics(val.labels, predict_with_signature(serve, val.images))
    if config.flip_tta:
        # What the mirror-averaging adds, for the report: the same model on single views.
        single = predict_with_signature(build_serving_function(result.model, config.input_size), val.images)
        single_metrics = compute_metrics(val.labels, single)
        metrics["single_view"] = {key: single_metrics[key] for key in ("accuracy", "log_loss", "roc_auc")}
    training = {
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "weights": weights.source if weights else "none (trained from scratch)",
    }
    return write_run(
        config,
        dataset,
        model=result.model,
        metrics=metrics,
        history=result.history,
        metadata={
            "preprocessing": f"{_DECODING.format(s=config.input_size)}; then {result.preprocessing}",
            "training": training,
        },
        evaluation={"best_epoch": result.best_epoch},
    )


def _train_pretrained(
    config: TrainConfig, dataset: LoadedDataset, backbones_loaded: list[tuple[Any, WeightsSource]]
) -> dict[str, Any]:

    result = train_pretrained(config, dataset, backbones_loaded)
    val = dataset.splits["validation"]
    serve = build_serving_function(result.model, config.input_size, config.flip_tta)
    _check_export_matches_features(serve, val.images[:8], result.p_dog_val[:8], result.pet_val[:8])

    metrics = compute_metrics(val.labels, result.p_dog_val)
    if result.single_view_p_dog_val is not None:
        single = compute_metrics(val.labels, result.single_view_p_dog_val)
        metrics["single_view"] = {key: single[key] for key in ("accuracy", "log_loss", "roc_auc")}
    threshold = choose_threshold(result.pet_train, config.ood_quantile)
    ood = {
        "threshold": threshold,
        "method": METHOD,
        "threshold_rule": f"{config.ood_quantile:g} quantile of the training photos' scores, at most 0.5",
        "pets_flagged_rate": float(np.mean(result.pet_val < threshold)),
        **_reference_photo_rates(serve, config.input_size, threshold),
    }
    logger.info(
        "cat-or-dog threshold %.4f: validation pets flagged %.2f%%, non-pet photos flagged %s",
        threshold,
        100 * ood["pets_flagged_rate"],
        ood.get("non_pets_flagged_rate"),
    )
    members = [{**member.source.as_dict(), "head": member.head_report} for member in result.members]
    sizes = ", ".join(f"{m.name} at its own size" for m in result.members)
    metadata = {
        "backbones": [member.name for member in result.members],
        "weights": [member.source.as_dict() for member in result.members],
        "ood": ood,
        "preprocessing": f"{_DECODING.format(s=config.input_size)}; then in the graph: {sizes}, "
        "pixels scaled (x - 127) / 128",
        "training": {
            "recipe": "pretrained features + logistic-regression head",
            "members": members,
            "fine_tune": result.fine_tune,
        },
    }
    return write_run(
        config,
        dataset,
        model=result.model,
        metrics=metrics,
        history=result.history,
        metadata=metadata,
        evaluation={"ood": ood, "members": members, "fine_tune": result.fine_tune},
    )


def _check_export_matches_features(
    serve: Any, images: np.ndarray, p_dog: np.ndarray, pet: np.ndarray
) -> None:
    """The exported function must give the numbers the head was measured with."""
    import tensorflow as tf

    outputs = serve(tf.constant(images, dtype=tf.uint8))
    served_p = outputs[PROBABILITIES].numpy()[:, 1]
    served_pet = outputs[PET_SCORE].numpy()
    if not (np.allclose(served_p, p_dog, atol=1e-4) and np.allclose(served_pet, pet, atol=1e-4)):
        raise RuntimeError(
            f"exported graph disagrees with the measured features: {served_p} vs {p_dog}, "
            f"{served_pet} vs {pet}"
        )


def _reference_photo_rates(serve: Any, size: int, threshold: float) -> dict[str, Any]:
    """Run the packaged non-pet (and pet) reference photos through the exported function."""
    import tensorflow as tf

    non_pets, pets = reference_photos()
    found: dict[str, Any] = {}
    for label, photos in (("non_pets", non_pets), ("pets", pets)):
        if not photos:
            continue
        pixels = np.stack([load_model_input(data, size, MAX_PIXELS) for data in photos.values()])
        scores = serve(tf.constant(pixels))[PET_SCORE].numpy()
        found[f"reference_{label}"] = {
            name: round(float(s), 5) for name, s in zip(photos, scores, strict=True)
        }
        if label == "non_pets":
            found["non_pets_flagged_rate"] = float(np.mean(scores < threshold))
    return found
