"""First start without a model, as a process: `python -m app serve` trains one (and says so), or names
what is missing; a broken export ends it with one line and exit code 2. (Which preset and why, in-process:
tests/unit/test_bootstrap.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.bootstrap import BootstrapError, ensure_model
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
