"""Named training recipes. Command-line flags override any value here.

`default` is what `python -m training train --data-dir DIR --output DIR` runs: the from-scratch
separable CNN, which needs no downloaded weights. Numbers are starting points to tune.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "arch": "scratch-cnn",
        "image_size": 128,
        "epochs": 60,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "schedule": "cosine",
        "warmup_epochs": 2,
        "fine_tune_epochs": 0,
        "fine_tune_lr": 1e-5,
        "augment": True,
    },
    "baseline": {
        "arch": "small-cnn",
        "image_size": 150,
        "epochs": 30,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "schedule": "constant",
        "warmup_epochs": 0,
        "fine_tune_epochs": 0,
        "fine_tune_lr": 1e-5,
        "augment": True,
    },
    "mobilenet": {
        "arch": "mobilenet_v2",
        "image_size": 160,
        "epochs": 10,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "schedule": "constant",
        "warmup_epochs": 0,
        "fine_tune_epochs": 5,
        "fine_tune_lr": 1e-5,
        "augment": True,
    },
    "efficientnet": {
        "arch": "efficientnet_v2_b0",
        "image_size": 192,
        "epochs": 10,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "schedule": "constant",
        "warmup_epochs": 0,
        "fine_tune_epochs": 5,
        "fine_tune_lr": 1e-5,
        "augment": True,
    },
}

DEFAULT_PRESET = "default"

# With --arch and no --preset, start from the recipe made for that architecture.
PRESET_FOR_ARCH: dict[str, str] = {
    "scratch-cnn": "default",
    "small-cnn": "baseline",
    "mobilenet_v2": "mobilenet",
    "efficientnet_v2_b0": "efficientnet",
}
