"""The `evaluate` command: measure an exported model on a dataset exactly as the service runs it.

The model is loaded by `catdog.saved_model.load_exported_model`, the loader the service uses, and
every photo is decoded by `catdog.imaging` (through `training.data`). Which photos are scored:

- data with its own validation split (a `validation/` folder): that folder, unless `split` says
  `train` or `all`;
- data without one (class folders only, Kaggle flat files): every file (`split` "all"), since no
  file of it can be known to be held out. `split="validation"` instead draws the seeded held-out
  fraction training would have drawn (fraction and seed from the model's metadata unless given);
  the result says which it did, in `validation_source` and `note`.

Models with a `pet_score` output also get an `ood` block: how many of the evaluated photos, all of
them cats or dogs, the "neither cat nor dog" threshold would wrongly reject, and the quantiles of
their pet scores. The metric functions themselves are in `training.metrics`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from catdog.contract import PROBABILITIES
from catdog.saved_model import ExportedModel, ModelLoadError, ModelOutputs, load_exported_model
from training.data import ALL, SPLIT_CHOICES, discover, load_dataset
from training.errors import ConfigError, TrainingError
from training.metrics import compute_metrics, format_metrics

# compute_metrics and format_metrics are re-exported: train.py imports them from here.
__all__ = [
    "OOD_QUANTILES",
    "ModelUnusableError",
    "compute_metrics",
    "evaluate_saved_model",
    "format_evaluation",
    "format_metrics",
    "ood_report",
    "predict_exported",
    "predict_with_signature",
]

logger = logging.getLogger("catdog.training.evaluate")

# Quantiles of pet_score over the evaluated (all cat or dog) photos, reported as "1%", "5%", "50%".
OOD_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.5)
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SEED = 42


class ModelUnusableError(TrainingError):
    """The model directory holds no usable export (the CLI prints this as one line)."""


def predict_with_signature(serve: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """P(dog) for uint8 images through a `serve`-style callable (uint8 batch -> {"probabilities"})."""
    import tensorflow as tf

    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start : start + batch_size], dtype=tf.uint8)
        probabilities = serve(batch)[PROBABILITIES].numpy()
        outputs.append(np.asarray(probabilities, dtype=np.float64)[:, 1])
    return np.concatenate(outputs) if outputs else np.zeros(0)


def predict_exported(model: ExportedModel, images: np.ndarray, batch_size: int = 64) -> ModelOutputs:
    """`ExportedModel.predict` over `images` in batches of `batch_size`, outputs concatenated."""
    if len(images) == 0:
        raise ValueError("no images to predict")
    parts = [model.predict(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    probabilities = np.concatenate([part.probabilities for part in parts])
    scores = [part.pet_score for part in parts if part.pet_score is not None]
    pet_score = np.concatenate(scores) if len(scores) == len(parts) else None
    return ModelOutputs(probabilities, pet_score)


def ood_report(pet_score: Any, threshold: float | None, threshold_source: str | None) -> dict[str, Any]:
    """The `ood` block for photos that all show a cat or a dog: a score below `threshold` is a miss."""
    scores = np.asarray(pet_score, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("no pet scores")
    flagged = None if threshold is None else int(np.sum(scores < threshold))
    return {
        "threshold": threshold,
        "threshold_source": threshold_source,
        "examples": int(scores.size),
        "pets_flagged": flagged,
        "pets_flagged_rate": None if flagged is None else flagged / scores.size,
        "pet_score_quantiles": {
            f"{q:.0%}": float(value)
            for q, value in zip(OOD_QUANTILES, np.quantile(scores, OOD_QUANTILES), strict=True)
        },
    }


def _training_settings(model: ExportedModel) -> dict[str, Any]:
    """The run's settings: `training.config` (older models kept them in `training` itself)."""
    training = (model.metadata.model_extra or {}).get("training")
    if not isinstance(training, dict):
        return {}
    config = training.get("config")
    return config if isinstance(config, dict) else training


def _describe(split: str, has_validation_split: bool, root: Path, validation_source: str) -> tuple[str, str]:
    """(validation_source for the result, one sentence saying what was scored)."""
    if split == ALL:
        if has_validation_split:
            return f"all files (train and validation splits of {root})", f"scored every file in {root}"
        source = f"all files (no train/validation split in {root})"
        return source, f"{root} has no train/validation split: scored every file in it"
    if has_validation_split:
        return validation_source, f"scored the {split} folder of {root}"
    part = "held-out validation part" if split == "validation" else "training part"
    return validation_source, (
        f"{root} has no train/validation split: scored the {part} of the seeded split training "
        f"draws, {validation_source}; split 'all' scores every file"
    )


def evaluate_saved_model(
    model_dir: Path | str,
    data_dir: Path | str,
    *,
    split: str | None = None,
    limit: int | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    output_json: Path | str | None = None,
    threshold: float | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure an exported model on a dataset, as the service would classify it.

    `split`: None picks `validation` when the data has a validation split and `all` otherwise;
    `train`, `validation` or `all` asks for one. `val_fraction` and `seed` matter only where a
    split must be drawn (default: the values recorded in the model's metadata). `threshold`
    overrides `metadata.ood.threshold` for models with a `pet_score` output.
    """
    if split is not None and split not in SPLIT_CHOICES:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLIT_CHOICES)}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"the pet-score threshold must be between 0 and 1, got {threshold}")
    # Cheap checks first: a wrong data path fails before TensorFlow loads the model.
    found = discover(data_dir, splits=(ALL,))
    chosen = split if split is not None else ("validation" if found.has_validation_split else ALL)

    try:
        model = load_exported_model(model_dir)
    except ModelLoadError as exc:
        raise ModelUnusableError(str(exc)) from exc
    if threshold is not None and not model.metadata.has_pet_score:
        raise ConfigError(
            f"model {model.metadata.version} has no pet_score output, so no threshold applies to it"
        )
    training = _training_settings(model)
    if val_fraction is None:
        val_fraction = float(training.get("val_fraction", DEFAULT_VAL_FRACTION))
    if seed is None:
        seed = int(training.get("seed", DEFAULT_SEED))

    dataset = load_dataset(
        data_dir,
        model.metadata.image_size,
        val_fraction=val_fraction,
        seed=seed,
        limit=limit,
        splits=(chosen,),
        progress=progress,
    )
    validation_source, note = _describe(
        chosen, dataset.has_validation_split, dataset.root, dataset.validation_source
    )
    logger.info("%s", note)
    data = dataset.splits[chosen]
    outputs = predict_exported(model, data.images, batch_size)
    result: dict[str, Any] = {
        "model": str(model.model_dir),
        "model_version": model.metadata.version,
        "data_dir": str(dataset.root),
        "layout": dataset.layout,
        "split": chosen,
        "requested_split": split,
        "validation_source": validation_source,
        "note": note,
        "data_hash": dataset.data_hash,
        "counts": dataset.counts()[chosen],
        "skipped": dataset.skipped_json()[chosen],
        "metrics": compute_metrics(data.labels, outputs.probabilities[:, 1]),
    }
    if outputs.pet_score is not None:
        ood = model.metadata.ood
        if threshold is not None:
            result["ood"] = ood_report(outputs.pet_score, threshold, "argument")
        elif ood is not None:
            result["ood"] = ood_report(outputs.pet_score, ood.threshold, "metadata")
        else:
            result["ood"] = ood_report(outputs.pet_score, None, None)
    if output_json is not None:
        path = Path(output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """What `training evaluate` prints: what was scored, the metrics, and the ood block if any."""
    lines = [
        f"model {result['model_version']} on split {result['split']!r} "
        f"({sum(result['counts'].values())} images) of {result['data_dir']}",
        result["note"],
        format_metrics(result["metrics"]),
    ]
    ood = result.get("ood")
    if ood is not None:
        quantiles = ", ".join(f"{name} {value:.4f}" for name, value in ood["pet_score_quantiles"].items())
        if ood["threshold"] is None:
            lines.append("not-a-pet threshold: none recorded in the model's metadata")
        else:
            lines.append(
                f"not-a-pet threshold {ood['threshold']:.4f} ({ood['threshold_source']}): "
                f"{ood['pets_flagged']} of {ood['examples']} pets flagged ({ood['pets_flagged_rate']:.2%})"
            )
        lines.append(f"pet_score quantiles: {quantiles}")
    return "\n".join(lines)
