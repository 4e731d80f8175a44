""" "Is it a cat or dog at all?": the pet score, the candidates it was chosen from, and the rule.

Evidence at hand without a single non-pet training photo:
- what the backbone's own ImageNet classifier says: the log-odds of its softmax mass on the cat
  (281-285) and dog (151-268) classes, or their unnormalized energy;
- where the photo's pooled features lie relative to the training photos': the mean cosine similarity
  to its `k` nearest ones, or the Mahalanobis distance to the cat and dog means (shared covariance).

`candidate_scores` computes each of these and combinations of the first with the others (robust
z-scores averaged, or their minimum); `compare_candidates` applies the rule, stated before any
candidate was measured: at the threshold that flags 0.5% of the validation pets, the candidate that
passes the fewest real non-pet photos (training/nonpets.py) wins; ties go to the higher ROC AUC of
validation pets against non-pets. The thresholds and the reference photos come from train/ only.

For Lite2 the rule chose the nearest-neighbour similarity at every input size measured (260, 340, 360
px: 0 of 67 non-pets passed; the ImageNet mass passed 3 and loses its calibration above the native
260 px), and by an AUC difference of 3e-5 the average with the ImageNet mass at 300 px. The shipped
signal (`PetSignal`) is therefore the similarity alone: pet_score is the mean cosine similarity of the
photo's pooled features to its `k` most similar training photos, in [0, 1]. A similarity of at least
`SAME_PHOTO` means the photo itself, its mirror image or an exact duplicate, and does not count: of the
3000 training photos' features at 340 px only one duplicate pair is that close, while an int8 backbone's
features of a photo stay at 0.95 or more of its float32 ones. So a training photo is scored as if it were
new in every runtime, and each runtime's threshold, the `quantile` of the training photos' own scores,
is computed by the exported graph itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from training.backbones.efficientnet_lite import IMAGENET_CAT_CLASSES, IMAGENET_CLASSES, IMAGENET_DOG_CLASSES

logger = logging.getLogger("catdog.training.ood")

METHOD = (
    "mean cosine similarity of the photo's pooled features to its k most similar training photos "
    "(the photo itself excluded); threshold: a quantile of the training photos' own scores"
)
PET_MASK = np.zeros(IMAGENET_CLASSES, dtype=bool)
PET_MASK[list(IMAGENET_CAT_CLASSES) + list(IMAGENET_DOG_CLASSES)] = True
# A cosine similarity this high is the same photo (its mirror image, a duplicate), not a neighbour.
SAME_PHOTO = 0.9


def _logsumexp(values: np.ndarray) -> np.ndarray:
    top = values.max(axis=1, keepdims=True)
    return np.asarray((top + np.log(np.exp(values - top).sum(axis=1, keepdims=True)))[:, 0])


def pet_log_odds(logits: np.ndarray) -> np.ndarray:
    """log P(cat or dog class) - log P(any other class), from ImageNet logits [N, 1000]; never inf."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.asarray(_logsumexp(logits[:, PET_MASK]) - _logsumexp(logits[:, ~PET_MASK]))


def unit_rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return np.asarray(features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12))


def neighbour_similarity(features: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine similarity of each row of `features` to its `k` most similar rows of `reference`
    (unit rows), similarities of `SAME_PHOTO` or more left out."""
    similarities = unit_rows(features) @ reference.T
    similarities[similarities >= SAME_PHOTO] = -1.0
    return np.asarray(np.sort(similarities, axis=1)[:, -k:].mean(axis=1), dtype=np.float64)


def _robust(values: np.ndarray) -> tuple[float, float]:
    low, median, high = np.percentile(values, [25, 50, 75])
    return float(median), float(max(high - low, 1e-9))


def _folds(count: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    return [order[start::folds] for start in range(folds)]


@dataclass(frozen=True)
class PetSignal:
    """The shipped pet score and its threshold: everything the exported graph needs."""

    reference: np.ndarray  # [M, D] unit rows: the training photos' pooled features
    k: int
    threshold: float
    quantile: float

    def score(self, features: np.ndarray) -> np.ndarray:
        return neighbour_similarity(features, self.reference, self.k)

    def describe(self) -> dict[str, Any]:
        return {"neighbours": self.k, "reference_photos": len(self.reference), "same_photo": SAME_PHOTO}


def fit_pet_signal(
    features: np.ndarray, *, k: int = 10, quantile: float = 0.005
) -> tuple[PetSignal, np.ndarray]:
    """The pet signal of these training photos, and their own scores (each photo without itself)."""
    reference = unit_rows(features)
    k = min(k, len(reference) - 1)  # each photo is scored without itself
    scores = neighbour_similarity(features, reference, k)
    return PetSignal(reference, k, threshold_of(scores, quantile), quantile), scores


def threshold_of(scores: np.ndarray, quantile: float) -> float:
    """The score that at most `quantile` of the training photos fall below."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), quantile))


class PetScore(layers.Layer):  # type: ignore[misc]
    """pooled features [N, D] -> pet_score [N, 1], as `PetSignal.score`."""

    def __init__(self, signal: PetSignal, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = signal.k
        self.reference = self.add_weight(
            shape=signal.reference.shape, initializer="zeros", trainable=False, name="reference"
        )
        self.reference.assign(signal.reference)

    def call(self, features: Any) -> Any:
        ops = keras.ops
        unit = features / ops.maximum(ops.sqrt(ops.sum(ops.square(features), axis=-1, keepdims=True)), 1e-12)
        similarities = ops.matmul(unit, ops.transpose(self.reference))
        similarities = ops.where(similarities >= SAME_PHOTO, -1.0, similarities)
        nearest, _ = ops.top_k(similarities, self.k)
        return ops.mean(nearest, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------- candidates


def _mahalanobis(train_f: np.ndarray, train_y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.covariance import LedoitWolf

    center, spread = train_f.mean(axis=0), train_f.std(axis=0) + 1e-6
    x = (train_f - center) / spread
    means = [x[train_y == label].mean(axis=0) for label in (0, 1)]
    precision = LedoitWolf().fit(np.concatenate([x[train_y == c] - means[c] for c in (0, 1)])).precision_

    def score(features: np.ndarray) -> np.ndarray:
        q = (features - center) / spread
        return np.asarray(-np.min([np.einsum("ij,jk,ik->i", q - m, precision, q - m) for m in means], axis=0))

    return score


def _energy(logits: np.ndarray) -> np.ndarray:
    """Free energy of the ImageNet head over the pet classes: logsumexp of their logits."""
    return _logsumexp(np.asarray(logits, dtype=np.float64)[:, PET_MASK])


def candidate_scores(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    others: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    k: int = 10,
    folds: int = 10,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """candidate -> {"train": out-of-fold scores of the train photos, name: scores of `others[name]`}.

    `train` is (features, logits, labels); `others` maps a set's name to its (features, logits)."""
    features, logits, labels = (np.asarray(a) for a in train)
    split = _folds(len(features), folds, seed)

    def out_of_fold(
        fit: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]],
    ) -> np.ndarray:
        scores = np.empty(len(features))
        for held_out in split:
            keep = np.ones(len(features), dtype=bool)
            keep[held_out] = False
            scores[held_out] = fit(features[keep], labels[keep])(features[held_out])
        return scores

    def knn(f: np.ndarray, _: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        reference = unit_rows(f)
        return lambda q: neighbour_similarity(q, reference, k)

    found: dict[str, dict[str, np.ndarray]] = {
        "imagenet_mass": {"train": pet_log_odds(logits)},
        "imagenet_energy": {"train": _energy(logits)},
        "neighbours": {"train": out_of_fold(knn)},
        "mahalanobis": {"train": out_of_fold(_mahalanobis)},
    }
    knn_all, maha_all = knn(features, labels), _mahalanobis(features, labels)
    for name, (f, lg) in others.items():
        found["imagenet_mass"][name] = pet_log_odds(lg)
        found["imagenet_energy"][name] = _energy(lg)
        found["neighbours"][name] = knn_all(np.asarray(f))
        found["mahalanobis"][name] = maha_all(np.asarray(f))
    for combined, (a, b), how in (
        ("mass+neighbours", ("imagenet_mass", "neighbours"), "mean"),
        ("mass+mahalanobis", ("imagenet_mass", "mahalanobis"), "mean"),
        ("min(mass,mahalanobis)", ("imagenet_mass", "mahalanobis"), "min"),
    ):
        scale_a, scale_b = _robust(found[a]["train"]), _robust(found[b]["train"])
        found[combined] = {}
        for name in found[a]:
            za = (found[a][name] - scale_a[0]) / scale_a[1]
            zb = (found[b][name] - scale_b[0]) / scale_b[1]
            found[combined][name] = (za + zb) / 2.0 if how == "mean" else np.minimum(za, zb)
    return found


def compare_candidates(
    scores: dict[str, dict[str, np.ndarray]], flagged: float = 0.005, quantile: float = 0.005
) -> tuple[list[dict[str, Any]], str]:
    """The table of candidates and the one the rule in this module's docstring chooses.

    `scores[candidate]` holds "train" (out-of-fold), "validation" (pets) and "non_pets". Per candidate:
    non-pets passed at the threshold that flags `flagged` of the validation pets (what the rule
    compares), ROC AUC, and for information what a threshold at the `quantile` of the train photos'
    scores would do."""
    from sklearn.metrics import roc_auc_score

    rows: list[dict[str, Any]] = []
    for name, sets in scores.items():
        pets, non_pets = sets["validation"], sets["non_pets"]
        at_operating_point = float(np.quantile(pets, flagged))
        from_train = float(np.quantile(sets["train"], quantile))
        rows.append(
            {
                "candidate": name,
                "non_pets_passed": float(np.mean(non_pets >= at_operating_point)),
                "roc_auc": float(
                    roc_auc_score(np.r_[np.ones(len(pets)), np.zeros(len(non_pets))], np.r_[pets, non_pets])
                ),
                "train_threshold_pets_flagged": float(np.mean(pets < from_train)),
                "train_threshold_non_pets_passed": float(np.mean(non_pets >= from_train)),
            }
        )
    chosen = min(rows, key=lambda row: (row["non_pets_passed"], -row["roc_auc"]))
    return rows, str(chosen["candidate"])
