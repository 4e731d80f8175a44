"""One training run from start to finish: check inputs, decode the photos once, run the recipe
(the pretrained head, or the gradient-descent fit loop), measure, export.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from catdog.contract import PET_SCORE, PROBABILITIES
from catdog.imaging import load_model_input
from training.architectures import TRANSFER_ARCHITECTURES
from training.backbones.packaged import load_backbone
from training.config import TrainConfig, backbones, is_pretrained
from training.data import MAX_PIXELS, LoadedDataset, discover, load_dataset
from training.evaluate import predict_with_signature
from training.export import build_serving_function
from training.metrics import compute_metrics
from training.nonpets import NonPetsError, build_non_pets, read_set
from training.ood import METHOD
from training.pretrained import PretrainedResult, train_pretrained
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
    started = time.monotonic()
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
    if is_pretrained(config.arch):
        # Converted (and cached) now, so a missing package or a bad file fails before decoding.
        for name in backbones(config.arch):
            load_backbone(name, config.weights)

    dataset = load_dataset(
        config.data_dir,
        config.input_size,
        val_fraction=config.val_fraction,
        seed=config.seed,
        limit=config.limit_per_class,
        found=found,
    )
    logger.info("data: %s (layout %s), counts %s", dataset.root, dataset.layout, dataset.counts())
    if is_pretrained(config.arch):
        return _train_pretrained(config, dataset, started)
    return _train_fitted(config, dataset, weights, started)


def _train_fitted(
    config: TrainConfig, dataset: LoadedDataset, weights: WeightsFile | None, started: float
) -> dict[str, Any]:

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
        started=started,
    )


def _train_pretrained(config: TrainConfig, dataset: LoadedDataset, started: float) -> dict[str, Any]:
    result = train_pretrained(config, dataset)
    serve = build_serving_function(result.model, config.input_size, config.flip_tta)
    if result.sample is not None and not config.flip_tta:
        _check_export_matches_features(serve, *result.sample)
    cv = result.cross_validation
    if result.held_out_p_dog is not None:
        val = dataset.splits["validation"]
        metrics = compute_metrics(val.labels, result.held_out_p_dog)
        split = "validation"
    else:
        metrics = compute_metrics(result.fit_labels, cv["out_of_fold_p_dog"])
        split = f"out of fold: {cv['repeats']} x {cv['folds']}-fold cross-validation over {cv['fitted_on']}"
    metrics["split"] = split
    cross_validation = {key: value for key, value in cv.items() if key != "out_of_fold_p_dog"}
    ood = {
        "threshold": result.signal.threshold,
        "method": METHOD,
        **result.signal.describe(),
        "threshold_rule": f"{config.ood_quantile:g} quantile of the {len(result.fit_scores)} training "
        "photos' own scores (each scored without itself)",
        "pets_flagged_rate": float(np.mean(result.fit_scores < result.signal.threshold)),
        **_held_out_pets(result),
        **_non_pet_rates(serve, config.input_size, result.signal.threshold),
    }
    logger.info(
        "cat-or-dog threshold %.4f: training pets flagged %.2f%%, non-pet photos passed %s",
        ood["threshold"],
        100 * ood["pets_flagged_rate"],
        ood.get("non_pets_passed_rate"),
    )
    members = [{**member.source.as_dict(), "input_size": member.size} for member in result.members]
    sizes = ", ".join(f"{member.label}" for member in result.members)
    metadata = {
        "backbones": [member.name for member in result.members],
        "weights": [member.source.as_dict() for member in result.members],
        "ood": ood,
        "cross_validation": {
            key: cross_validation[key]
            for key in ("C", "folds", "repeats", "log_loss", "accuracy", "fitted_on")
        }
        | {"ece": cross_validation["calibration"]["ece"]},
        "preprocessing": f"{_DECODING.format(s=config.input_size)}; then in the graph: {sizes}, "
        "pixels scaled (x - 127) / 128",
        "training": {
            "recipe": f"pretrained features ({config.head_features}) + logistic-regression head, C by "
            "cross-validation; pet score from the nearest training photos",
            "members": members,
            "head": {
                "C": result.head.c,
                "features": int(result.head.coef.size),
                "transform": config.head_features,
            },
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
        evaluation={"ood": ood, "cross_validation": cross_validation, "fine_tune": result.fine_tune},
        calibration=cross_validation["calibration"],
        started=started,
    )


def _held_out_pets(result: PretrainedResult) -> dict[str, Any]:
    if result.held_out_pet is None:
        return {}
    return {"validation_pets_flagged_rate": float(np.mean(result.held_out_pet < result.signal.threshold))}


def _non_pet_rates(serve: Any, size: int, threshold: float) -> dict[str, Any]:
    """The packaged photos that are neither cats nor dogs (training/nonpets.py), and the few pets found
    beside them, through the exported function: how many pass the threshold."""
    import tensorflow as tf

    try:
        folder = build_non_pets()
    except NonPetsError as exc:
        logger.warning("the non-pet photos cannot be had, so they are not measured: %s", exc)
        return {}
    found: dict[str, Any] = {}
    for group in ("non-pets", "pets"):
        photos = read_set(folder, group)
        pixels = np.stack([load_model_input(data, size, MAX_PIXELS) for data in photos.values()])
        scores = np.concatenate(
            [serve(tf.constant(pixels[i : i + 16]))[PET_SCORE].numpy() for i in range(0, len(pixels), 16)]
        )
        found[f"{group.replace('-', '_')}_scores"] = {
            name: round(float(score), 5) for name, score in zip(photos, scores, strict=True)
        }
        if group == "non-pets":
            found["non_pets_passed_rate"] = float(np.mean(scores >= threshold))
            found["non_pets"] = len(photos)
    return found


def _check_export_matches_features(
    serve: Any, images: np.ndarray, p_dog: np.ndarray, pet: np.ndarray
) -> None:
    """The exported function must give the numbers the head and the pet signal were measured with."""
    import tensorflow as tf

    outputs = serve(tf.constant(images, dtype=tf.uint8))
    served_p = outputs[PROBABILITIES].numpy()[:, 1]
    served_pet = outputs[PET_SCORE].numpy()
    if not (np.allclose(served_p, p_dog, atol=1e-4) and np.allclose(served_pet, pet, atol=1e-4)):
        raise RuntimeError(
            f"exported graph disagrees with the measured features: {served_p} vs {p_dog}, "
            f"{served_pet} vs {pet}"
        )
