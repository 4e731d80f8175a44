"""Frozen-feature variants that are not in the recipe, measured as `python -m training select` measures
its candidates (same folds over all 3000 labelled photos, the same logistic head, C by mean out-of-fold
log loss), each against the recipe's own features at the same input size.

    .venv/bin/python scripts/feature_variants.py --data-dir ../shared/data/cats_and_dogs_filtered \
        [--sizes 320 336 340] [--zoom-size 336]

Variants of EfficientNet-Lite2's last feature map (the 1280-channel head activations, ReLU6):
- pooling: average (the recipe), generalized mean p = 2 and 3 (GeM), max;
- the transform the head reads: sqrt (the recipe), x ** 0.25, log(x + 0.001);
- extra inputs: the ImageNet logits' dog-mass and cat-mass (log-sum-exp over the 118 dog and 5 cat
  classes, the classifier trained on 1.28M photos); the pooled output of the last block (before the
  head convolution) and of the last block of the 192-channel stage (208 channels in Lite2);
- two heads, their logits averaged ("avg:sqrt|gem3:sqrt", printed with "&");
- more training views (`--zoom-size`): the head also fitted on a 10% centre zoom of each photo and its
  mirror image, at that size.

A variant earns a place in the recipe only if it wins at every size, not at one: the log loss of Lite2
moves by 10-20% between neighbouring input sizes for no reason a rule can state, so a gain at one size
is not evidence. Each size's features are extracted once (about 3.5 minutes per view on 2 cores) and
cached under ~/.cache/catdog/variants.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.crossval import fit_head, folds_for, mean_interval, paired, sigmoid
from training.features import cache_dir, transform
from training.metrics import accuracy, log_loss
from training.select import FeatureStore

C_VALUES = (0.03, 0.1, 0.3, 1.0, 3.0)
BACKBONE = "efficientnet_lite2"
DOG_CLASSES = slice(151, 269)
CAT_CLASSES = slice(281, 286)
RECIPE = "avg:sqrt"
VARIANTS = (
    RECIPE,
    "gem2:sqrt",
    "gem3:sqrt",
    "max:sqrt",
    "avg:pow0.25",
    "avg:log",
    "gem3:pow0.25",
    "avg:sqrt+masses",
    "avg:sqrt+last",
    "avg:sqrt+stage6",
    "avg:sqrt|gem3:sqrt",
)


def extract(images: np.ndarray, size: int, view: str) -> dict[str, np.ndarray]:
    """Every pooling of one view ("plain", "mirror", "zoom", "zoom-mirror") of uint8 photos at `size`."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
    path = cache_dir().parent / "variants" / f"{BACKBONE}@{size}-{view}-{digest}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {key: np.asarray(stored[key]) for key in stored.files}
    import keras
    import tensorflow as tf
    from scipy.special import logsumexp

    from training.backbones.efficientnet_lite import block_table, build_efficientnet_lite, get_variant
    from training.backbones.packaged import load_backbone

    native, _ = load_backbone(BACKBONE, None)
    backbone = build_efficientnet_lite(BACKBONE, size)
    backbone.set_weights(native.get_weights())
    blocks = block_table(get_variant(BACKBONE))
    stage6 = [b for b in blocks if b.out_channels == blocks[-2].out_channels][-1]
    stage6_layer = f"block{stage6.index}_add" if stage6.residual else f"block{stage6.index}_project_bn"
    maps = keras.Model(
        backbone.input,
        [
            backbone.get_layer("head_relu6").output,
            backbone.get_layer(f"block{len(blocks) - 1}_project_bn").output,
            backbone.get_layer(stage6_layer).output,
            backbone.get_layer("imagenet_logits").output,
        ],
    )

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def pooled(pixels: Any) -> dict[str, Any]:
        head, last, mid, logits = maps(pixels, training=False)
        return {
            "avg": tf.reduce_mean(head, [1, 2]),
            "max": tf.reduce_max(head, [1, 2]),
            "gem2": tf.sqrt(tf.reduce_mean(tf.square(head), [1, 2]) + 1e-12),
            "gem3": tf.reduce_mean(tf.pow(head + 1e-6, 3.0), [1, 2]) ** (1.0 / 3.0),
            "last": tf.reduce_mean(last, [1, 2]),
            "stage6": tf.reduce_mean(mid, [1, 2]),
            "logits": logits,
        }

    found: dict[str, list[np.ndarray]] = {}
    margin = round(size * 0.05)
    for start in range(0, len(images), 32):
        pixels = tf.constant(images[start : start + 32], tf.float32)
        if "mirror" in view:
            pixels = pixels[:, :, ::-1]
        if view.startswith("zoom"):
            crop = pixels[:, margin : size - margin, margin : size - margin]
            pixels = tf.image.resize(crop, (size, size), antialias=True)
        for key, value in pooled(pixels).items():
            found.setdefault(key, []).append(np.asarray(value))
    arrays = {key: np.concatenate(parts) for key, parts in found.items()}
    logits = arrays.pop("logits")
    arrays["masses"] = np.stack(
        [logsumexp(logits[:, DOG_CLASSES], axis=1), logsumexp(logits[:, CAT_CLASSES], axis=1)], axis=1
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, **arrays)  # type: ignore[arg-type]
    partial.rename(path)
    print(f"  extracted {BACKBONE}@{size} {view}", flush=True)
    return arrays


def features(pools: dict[str, np.ndarray], spec: str) -> np.ndarray:
    """ "gem3:sqrt+masses" -> the named poolings, each through its transform, side by side."""
    parts = []
    for part in spec.split("+"):
        name, _, kind = part.partition(":")
        x: np.ndarray = pools[name].astype(np.float32)
        if kind == "pow0.25":
            x = np.maximum(x, 0.0) ** 0.25
        elif kind == "log":
            x = np.log(np.maximum(x, 0.0) + 1e-3)
        else:  # the recipe's own transforms, exactly as training applies them
            x = transform(x, kind)
        parts.append(x)
    return np.concatenate(parts, axis=1)


def cross_validate(
    views: dict[str, dict[str, np.ndarray]],
    spec: str,
    train_views: tuple[str, ...],
    labels: np.ndarray,
    splits: Any,
) -> tuple[float, list[float], list[float]]:
    """(best C, per-fold log loss, per-fold accuracy); "a|b": two heads, their logits averaged."""
    heads = spec.split("|")
    x = {view: [features(views[view], head) for head in heads] for view in train_views}
    losses: dict[float, list[float]] = {c: [] for c in C_VALUES}
    accuracies: dict[float, list[float]] = {c: [] for c in C_VALUES}
    for train, held_out in splits:
        y = np.tile(labels[train], len(train_views))
        for c in C_VALUES:
            logit = np.zeros(len(held_out))
            for index in range(len(heads)):
                fitted = fit_head(np.concatenate([x[view][index][train] for view in train_views]), y, c)
                logit += fitted.logit(x["plain"][index][held_out]) / len(heads)
            p = sigmoid(logit)
            losses[c].append(log_loss(labels[held_out], p))
            accuracies[c].append(accuracy(labels[held_out], p))
    best = min(C_VALUES, key=lambda c: (statistics.fmean(losses[c]), c))
    return best, losses[best], accuracies[best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 336, 340])
    parser.add_argument("--zoom-size", type=int, default=336, help="also measure zoomed training views here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    store = FeatureStore(args.data_dir, 32)
    print("| size | variant | training views | C | log loss [95%] | accuracy % | folds better / worse |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        images, labels, _ = store.photos(size)
        splits = folds_for(labels, 10, 3, args.seed)
        names = ["plain", "mirror"] + (["zoom", "zoom-mirror"] if size == args.zoom_size else [])
        views = {view: extract(images, size, view) for view in names}
        runs: list[tuple[str, tuple[str, ...]]] = [(spec, ("plain", "mirror")) for spec in VARIANTS]
        if size == args.zoom_size:
            runs.append((RECIPE, ("plain", "mirror", "zoom", "zoom-mirror")))
        reference: list[float] = []
        for spec, train_views in runs:
            c, losses, accuracies = cross_validate(views, spec, train_views, labels, splits)
            reference = reference or losses
            ll, acc = mean_interval(losses), mean_interval(accuracies)
            versus = paired(losses, reference)
            print(
                f"| {size} | {spec.replace('|', ' & ')} | {', '.join(train_views)} | {c:g} | "
                f"{ll['mean']:.4f} "
                f"[{ll['low']:.4f}, {ll['high']:.4f}] | {100 * acc['mean']:.2f} | "
                f"{versus['better']} / {versus['worse']} of {len(losses)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
