"""`python -m training select`: candidates for the default model, compared by repeated cross-validation.

Every candidate is a feature recipe ("efficientnet_lite2@340:sqrt": the members at their input sizes,
the transform the head reads) with the logistic head of training/pretrained.py, C chosen by mean
out-of-fold log loss. All candidates are scored on the same folds over every labelled photo (train/ and
validation/), so each is compared with the incumbent fold by fold. Features are extracted once per
member, size and photo set and cached (training/features.py): a head costs seconds.

The report: per candidate the mean out-of-fold accuracy and log loss with 95% intervals, the expected
calibration error, how many folds it beats the incumbent on (log loss), and its compute relative to
Lite2 at 260 px (multiply-accumulates, scaled by pixels). `--temperature` also measures the best
candidate with a temperature fitted inside each training fold (an inner cross-validation). Then the pet
signal's candidates for the best one (training/ood.py's rule; reference and thresholds from train/
only, measured on the validation pets and the real non-pet photos). Written to OUTPUT/report.json,
OUTPUT/report.md and OUTPUT/reliability.png.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.crossval import (
    calibration_table,
    cross_validate,
    fit_head,
    folds_for,
    mean_interval,
    paired,
    sigmoid,
)
from training.data import load_dataset
from training.errors import ConfigError
from training.features import TRANSFORMS, cached_extract, make_member, parse_members, progress_bar, transform
from training.metrics import accuracy, log_loss

logger = logging.getLogger("catdog.training.select")

INCUMBENT = "efficientnet_lite2@260:linear"
CANDIDATES = (
    INCUMBENT,
    "efficientnet_lite2@260:sqrt",
    "efficientnet_lite2@300:sqrt",
    "efficientnet_lite2@320:sqrt",
    "efficientnet_lite2@330:sqrt",
    "efficientnet_lite2@336:sqrt",
    "efficientnet_lite2@340:linear",
    "efficientnet_lite2@340:sqrt",
    "efficientnet_lite2@360:sqrt",
    "efficientnet_lite2@380:sqrt",
    "efficientnet_lite0+efficientnet_lite2:sqrt",
    "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2:sqrt",
)
C_VALUES = (0.01, 0.03, 0.1, 0.3, 1.0)
# Multiply-accumulates of each backbone at its own size (EfficientNet-Lite's published figures).
MACS = {"efficientnet_lite0": 407e6, "efficientnet_lite1": 631e6, "efficientnet_lite2": 899e6}
NATIVE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


@dataclass(frozen=True)
class Candidate:
    spec: str
    members: tuple[tuple[str, int], ...]
    transform: str

    @classmethod
    def parse(cls, spec: str) -> Candidate:
        arch, _, kind = spec.partition(":")
        kind = kind or "sqrt"
        if kind not in TRANSFORMS:
            raise ConfigError(f"{spec}: the transform after ':' must be one of {', '.join(TRANSFORMS)}")
        return cls(f"{arch}:{kind}", parse_members(arch), kind)

    @property
    def input_size(self) -> int:
        return max(size for _, size in self.members)

    @property
    def relative_compute(self) -> float:
        base = MACS["efficientnet_lite2"]
        return sum(MACS[name] * (size / NATIVE[name]) ** 2 for name, size in self.members) / base


class FeatureStore:
    """Decoded photos per input size and (features, mirrored features, logits) per member, in memory
    for this run and on disk across runs."""

    def __init__(self, data_dir: Path, batch_size: int) -> None:
        self.data_dir = data_dir
        self.batch_size = batch_size
        self._photos: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        self._features: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def photos(self, size: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(uint8 images, labels, how many of them are train/) of train/ then validation/."""
        if size not in self._photos:
            data = load_dataset(self.data_dir, size, splits=("train", "validation"), progress=False)
            train, val = data.splits["train"], data.splits["validation"]
            self._photos = {  # one size at a time in memory
                size: (
                    np.concatenate([train.images, val.images]),
                    np.concatenate([train.labels, val.labels]),
                    len(train.labels),
                )
            }
        return self._photos[size]

    def features(self, name: str, size: int, input_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (name, size, input_size)
        if key not in self._features:
            images, _, _ = self.photos(input_size)
            member = make_member(name, size, input_size)
            plain, logits = cached_extract(member, images, self.batch_size, mirror=False, what="all photos")
            mirrored, _ = cached_extract(member, images, self.batch_size, mirror=True, what="all photos")
            self._features[key] = (plain, mirrored, logits)
        return self._features[key]


def _fold_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimizes the log loss of sigmoid(logit / T) (bounded 1D search)."""
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        return float(log_loss(labels, sigmoid(logits / np.exp(log_t))))

    return float(np.exp(minimize_scalar(loss, bounds=(-2.0, 2.0), method="bounded").x))


def temperature_cv(
    x: np.ndarray, x_mirrored: np.ndarray, labels: np.ndarray, splits: list[Any], c: float, *, inner: int = 5
) -> dict[str, Any]:
    """The head at C `c`, its logits divided by a temperature fitted on each training fold's own
    out-of-fold logits (inner `inner`-fold cross-validation): per-fold log loss and accuracy."""
    losses, accuracies, temperatures = [], [], []
    for train, held_out in splits:
        inner_logits = np.zeros(len(train))
        for inner_train, inner_held in folds_for(labels[train], inner, 1, 0):
            rows = train[inner_train]
            head = fit_head(np.concatenate([x[rows], x_mirrored[rows]]), np.tile(labels[rows], 2), c)
            inner_logits[inner_held] = head.logit(x[train[inner_held]])
        t = _fold_temperature(inner_logits, labels[train])
        head = fit_head(np.concatenate([x[train], x_mirrored[train]]), np.tile(labels[train], 2), c)
        p = sigmoid(head.logit(x[held_out]) / t)
        losses.append(log_loss(labels[held_out], p))
        accuracies.append(accuracy(labels[held_out], p))
        temperatures.append(t)
    return {
        "log_loss": mean_interval(losses),
        "accuracy": mean_interval(accuracies),
        "fold_log_loss": losses,
        "temperature": {
            "median": statistics.median(temperatures),
            "min": min(temperatures),
            "max": max(temperatures),
        },
    }


def select(
    data_dir: Path | str,
    output: Path | str,
    *,
    candidates: tuple[str, ...] = CANDIDATES,
    incumbent: str = INCUMBENT,
    folds: int = 10,
    repeats: int = 3,
    seed: int = 0,
    temperature: bool = False,
    batch_size: int = 32,
) -> dict[str, Any]:
    parsed = [Candidate.parse(spec) for spec in candidates]
    base = Candidate.parse(incumbent)
    if base.spec not in {c.spec for c in parsed}:
        parsed.insert(0, base)
    store = FeatureStore(Path(data_dir), batch_size)
    results: dict[str, dict[str, Any]] = {}
    splits: list[Any] | None = None
    for candidate in sorted(parsed, key=lambda c: c.input_size):
        parts = [store.features(name, size, candidate.input_size) for name, size in candidate.members]
        _, labels, _ = store.photos(candidate.input_size)
        if splits is None:
            splits = folds_for(labels, folds, repeats, seed)
        x = transform(np.concatenate([p[0] for p in parts], axis=1), candidate.transform)
        x_mirrored = transform(np.concatenate([p[1] for p in parts], axis=1), candidate.transform)
        bar = progress_bar(len(splits), f"{candidate.spec}: {len(C_VALUES)} C values", "fold")
        cv = cross_validate(x, labels, splits, C_VALUES, mirrored=x_mirrored, repeats=repeats, progress=bar)
        c = cv.best_c
        out_of_fold = cv.predictions[c].mean(axis=0)
        results[candidate.spec] = {
            **cv.summary(),
            "fold_log_loss": cv.fold_log_loss[c],
            "fold_accuracy": cv.fold_accuracy[c],
            "calibration": calibration_table(labels, out_of_fold),
            "relative_compute": candidate.relative_compute,
            "errors_per_repeat": float(np.mean(np.sum((cv.predictions[c] > 0.5) != labels, axis=1))),
        }
        if temperature:
            results[candidate.spec]["_features"] = (x, x_mirrored, labels)
        logger.info(
            "%s: log loss %.4f, accuracy %.4f (C=%g)",
            candidate.spec,
            results[candidate.spec]["log_loss"]["mean"],
            results[candidate.spec]["accuracy"]["mean"],
            c,
        )
    assert splits is not None
    incumbent_losses = results[base.spec]["fold_log_loss"]
    incumbent_accuracy = results[base.spec]["fold_accuracy"]
    for result in results.values():
        result["vs_incumbent"] = {
            "log_loss": paired(result["fold_log_loss"], incumbent_losses),
            "accuracy": paired(result["fold_accuracy"], incumbent_accuracy, lower_is_better=False),
        }
    best = min(results, key=lambda spec: results[spec]["log_loss"]["mean"])
    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "photos": len(store.photos(Candidate.parse(best).input_size)[1]),
        "folds": folds,
        "repeats": repeats,
        "seed": seed,
        "incumbent": base.spec,
        "best": best,
        "candidates": {spec: _public(result) for spec, result in results.items()},
    }
    if temperature:
        x, x_mirrored, labels = results[best]["_features"]
        report["temperature"] = {
            "candidate": best,
            **temperature_cv(x, x_mirrored, labels, splits, results[best]["C"]),
        }
        report["temperature"]["vs_uncalibrated"] = paired(
            report["temperature"].pop("fold_log_loss"), results[best]["fold_log_loss"]
        )
    report["pet_signal"] = pet_signal_candidates(store, Candidate.parse(best))
    _write(Path(output), report, results[best]["calibration"])
    return report


def _public(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if not key.startswith("_")}


def pet_signal_candidates(store: FeatureStore, candidate: Candidate) -> dict[str, Any]:
    """training/ood.py's candidates and rule on this feature recipe: reference and thresholds from
    train/, measured on the validation pets and the real non-pet photos."""
    from catdog.imaging import load_model_input
    from training.data import MAX_PIXELS
    from training.nonpets import build_non_pets, read_set
    from training.ood import candidate_scores, compare_candidates

    _, labels, train_count = store.photos(candidate.input_size)
    parts = [store.features(name, size, candidate.input_size) for name, size in candidate.members]
    features = np.concatenate([p[0] for p in parts], axis=1)
    logits = np.mean([p[2] for p in parts], axis=0)  # the members' ImageNet logits, averaged
    photos = read_set(build_non_pets(), "non-pets")
    pixels = np.stack([load_model_input(data, candidate.input_size, MAX_PIXELS) for data in photos.values()])
    non_parts = [
        cached_extract(
            make_member(name, size, candidate.input_size), pixels, 16, mirror=False, what="non-pets"
        )
        for name, size in candidate.members
    ]
    non_features = np.concatenate([p[0] for p in non_parts], axis=1)
    non_logits = np.mean([p[1] for p in non_parts], axis=0)
    scores = candidate_scores(
        (features[:train_count], logits[:train_count], labels[:train_count]),
        {
            "validation": (features[train_count:], logits[train_count:]),
            "non_pets": (non_features, non_logits),
        },
    )
    rows, chosen = compare_candidates(scores)
    return {"features": candidate.spec, "non_pets": len(photos), "rows": rows, "chosen": chosen}


def _write(output: Path, report: dict[str, Any], calibration: dict[str, Any]) -> None:
    from training.plots import plot_reliability

    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    (output / "report.md").write_text(format_report(report) + "\n", encoding="utf-8")
    plot_reliability(calibration, output / "reliability.png")


def _interval(figure: dict[str, float], scale: float = 1.0, digits: int = 4) -> str:
    low, mean, high = (scale * figure[key] for key in ("low", "mean", "high"))
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def format_report(report: dict[str, Any]) -> str:
    folds = report["folds"] * report["repeats"]
    lines = [
        f"{report['repeats']} x {report['folds']}-fold cross-validation over {report['photos']} photos "
        f"(seed {report['seed']}); incumbent {report['incumbent']}",
        "",
        "| candidate | compute | C | log loss [95%] | accuracy % [95%] | errors | ECE "
        "| folds better / worse |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in sorted(report["candidates"].items(), key=lambda item: item[1]["log_loss"]["mean"]):
        wins = r["vs_incumbent"]["log_loss"]
        lines.append(
            f"| {spec} | {r['relative_compute']:.2f}x | {r['C']:g} | {_interval(r['log_loss'])} | "
            f"{_interval(r['accuracy'], 100, 2)} | {r['errors_per_repeat']:.1f} | "
            f"{r['calibration']['ece']:.4f} | {wins['better']} / {wins['worse']} of {folds} |"
        )
    lines.append(
        "\n(compute: multiply-accumulates relative to Lite2 at 260 px; errors: misclassified photos per "
        "repeat; folds better / worse: log loss against the incumbent on the same folds)"
    )
    if "temperature" in report:
        t = report["temperature"]
        lines += [
            "",
            f"{t['candidate']} with a temperature fitted inside each training fold (median T "
            f"{t['temperature']['median']:.3f}): log loss {_interval(t['log_loss'])}, accuracy "
            f"{_interval(t['accuracy'], 100, 2)}; better than without on {t['vs_uncalibrated']['better']} "
            f"of {folds} folds, worse on {t['vs_uncalibrated']['worse']}",
        ]
    pet = report["pet_signal"]
    lines += [
        "",
        f"Pet signal candidates on {pet['features']} (reference and thresholds from train/; "
        f"{pet['non_pets']} real non-pet photos):",
        "",
        "| candidate | non-pets passed (0.5% of validation pets flagged) | ROC AUC "
        "| train-quantile threshold: pets flagged / non-pets passed |",
        "|---|---|---|---|",
    ]
    for row in sorted(pet["rows"], key=lambda row: (row["non_pets_passed"], -row["roc_auc"])):
        flagged, passed = row["train_threshold_pets_flagged"], row["train_threshold_non_pets_passed"]
        lines.append(
            f"| {row['candidate']} | {100 * row['non_pets_passed']:.1f}% | {row['roc_auc']:.5f} | "
            f"{100 * flagged:.1f}% / {100 * passed:.1f}% |"
        )
    lines.append(f"\nchosen by the rule: {pet['chosen']}")
    return "\n".join(lines)
