"""First start without a model: train the default one from the shared photos, or say what is missing."""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys

from app.settings import Settings
from catdog.saved_model import model_exists

logger = logging.getLogger("catdog.bootstrap")


class BootstrapError(RuntimeError):
    """No model is present and none can be trained; the message says what is missing."""


def training_command(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "training", "train",
        "--preset", settings.train_preset,
        "--data-dir", str(settings.data_dir),
        "--output", str(settings.model_dir),
        *shlex.split(settings.train_args),
    ]  # fmt: skip


def ensure_model(settings: Settings) -> None:
    """Return when settings.model_dir holds a model, training it first if allowed and possible."""
    if model_exists(settings.model_dir):
        return
    if not settings.auto_train:
        raise BootstrapError(
            f"no model at {settings.model_dir} and CATDOG_AUTO_TRAIN is off: "
            "set CATDOG_MODEL_DIR to an exported model directory"
        )
    if not settings.data_dir.is_dir():
        raise BootstrapError(
            f"no model at {settings.model_dir} (saved_model.pb + metadata.json), and no training data at "
            f"{settings.data_dir} to train one: set CATDOG_DATA_DIR to a cats/dogs photo directory "
            "or CATDOG_MODEL_DIR to an exported model"
        )
    command = training_command(settings)
    logger.warning(
        "no model found: training the default model before serving (about 20 minutes on 2 CPU cores)",
        extra={"model_dir": str(settings.model_dir), "data_dir": str(settings.data_dir),
               "command": shlex.join(command)},
    )  # fmt: skip
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0 or not model_exists(settings.model_dir):
        raise BootstrapError(
            f"training the default model failed (exit code {completed.returncode}); "
            f"command: {shlex.join(command)}"
        )
    logger.info("default model trained", extra={"model_dir": str(settings.model_dir)})
