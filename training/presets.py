"""Named training recipes, for what a user wants. Command-line flags override any value here.

Measured figures (accuracy, log loss, speed) are not kept here: `python -m training presets`
prints them from `training/preset_results.json`, which `python -m benchmarks.presets` writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(__file__).with_name("preset_results.json")


@dataclass(frozen=True)
class Preset:
    purpose: str
    settings: dict[str, Any]


# Pretrained backbones: features extracted once (mirror copies of the photos as augmentation), a
# logistic head on their square roots with C chosen by cross-validation, fitted on train/ and
# validation/ together; no epochs unless fine-tuning is asked for.
_PRETRAINED: dict[str, Any] = {
    "batch_size": 32,
    "augment": True,
    "fine_tune_lr": 1e-5,
    "head_features": "sqrt",
    "fit_on": "all",
}
# Transfer learning with keras.applications backbones (weights need internet or the Keras cache).
_TRANSFER: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "schedule": "constant",
    "warmup_epochs": 0,
    "fine_tune_epochs": 5,
    "fine_tune_lr": 1e-5,
    "augment": True,
    "flip_tta": True,
}

PRESETS: dict[str, Preset] = {
    "default": Preset(
        "the served model: EfficientNet-Lite2 at 336 px, the lowest cross-validated log loss among "
        "candidates within 1.5x the service cost of the previous default (Lite2 at its own 260 px)",
        {**_PRETRAINED, "arch": "efficientnet_lite2@336", "flip_tta": False},
    ),
    "accurate": Preset(
        "EfficientNet-Lite2 at 340 px: the lowest cross-validated log loss of all candidates, at about "
        "1.5-1.6x the previous default's service cost (over the default's budget)",
        {**_PRETRAINED, "arch": "efficientnet_lite2@340", "flip_tta": False},
    ),
    "fast": Preset(
        "lowest latency: EfficientNet-Lite0 and a logistic head",
        {**_PRETRAINED, "arch": "efficientnet_lite0", "flip_tta": False},
    ),
    "ensemble": Preset(
        "Lite0+1+2 at their own sizes, features concatenated under one head: the compute of all three",
        {
            **_PRETRAINED,
            "arch": "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2",
            "flip_tta": False,
        },
    ),
    "finetune": Preset(
        "Lite0, then end-to-end fine-tuning from the logistic head (fitted on train/; kept only if "
        "validation log loss improves)",
        {
            **_PRETRAINED,
            "arch": "efficientnet_lite0",
            "flip_tta": False,
            "fine_tune_epochs": 2,
            "fit_on": "train",
        },
    ),
    "scratch": Preset(
        "no pretrained weights: a separable-conv residual CNN trained from scratch (60 epochs)",
        {
            "arch": "scratch-cnn",
            "image_size": 128,
            "epochs": 60,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "schedule": "cosine",
            "warmup_epochs": 2,
            "augment": True,
            "flip_tta": True,
        },
    ),
    "baseline": Preset(
        'the Keras "very little data" recipe as published (small CNN, no test-time augmentation)',
        {
            "arch": "small-cnn",
            "image_size": 150,
            "epochs": 30,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "schedule": "constant",
            "augment": True,
            "flip_tta": False,
        },
    ),
    "mobilenet": Preset(
        "keras.applications MobileNetV2 transfer learning (weights from the Keras cache or a download)",
        {**_TRANSFER, "arch": "mobilenet_v2", "image_size": 160},
    ),
    "efficientnet": Preset(
        "keras.applications EfficientNetV2-B0 transfer learning (weights from the Keras cache or a download)",
        {**_TRANSFER, "arch": "efficientnet_v2_b0", "image_size": 192},
    ),
}

DEFAULT_PRESET = "default"
# Used by the serve command's train-if-missing path when the weights packages are not installed.
NO_WEIGHTS_PRESET = "scratch"

# With --arch and no --preset, start from the recipe made for that architecture.
PRESET_FOR_ARCH: dict[str, str] = {
    "scratch-cnn": "scratch",
    "small-cnn": "baseline",
    "mobilenet_v2": "mobilenet",
    "efficientnet_v2_b0": "efficientnet",
    "efficientnet_lite0": "fast",
    "efficientnet_lite1": "fast",
    "efficientnet_lite2": "default",
}


def measured_results() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(RESULTS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data


def format_presets() -> str:
    """One block per preset: purpose, settings and the figures measured for it (if any)."""
    results = measured_results()
    measured = results.get("presets", {})
    lines = []
    for name, preset in PRESETS.items():
        lines.append(f"{name}: {preset.purpose}")
        lines.append("  " + ", ".join(f"{key}={value}" for key, value in sorted(preset.settings.items())))
        figures = measured.get(name)
        if figures:
            lines.append(
                "  measured: accuracy {accuracy:.4f}, log loss {log_loss:.4f}, ROC AUC {roc_auc:.4f}, "
                "{img_s_batch1:.1f} img/s at batch 1, {img_s_batch32:.1f} at batch 32, "
                "SavedModel {size_mb:.1f} MB".format(**figures)
            )
        elif preset.settings.get("head_features"):
            lines.append(
                "  not measured as a preset: its recipe cross-validated by `python -m training select "
                f"--candidates {preset.settings['arch']}:sqrt`, its service by `python -m benchmarks.models`"
            )
        else:
            lines.append("  not measured here")
    if results.get("command"):
        lines.append(
            f"figures: validation split of {results.get('data', '?')}, {results.get('machine', '?')}; "
            f"made by `{results['command']}`"
        )
    return "\n".join(lines)
