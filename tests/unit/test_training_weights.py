"""Where transfer-learning weights come from. Nothing here downloads anything. (Training with a weights
file: tests/system/test_training_weights_transfer.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training_fixtures import make_class_folders
from training import weights as weights_module
from training.cli import main
from training.errors import WeightsUnavailableError
from training.weights import cache_path, resolve_weights


def test_cache_file_names_match_keras_applications(empty_keras_home: Path) -> None:
    models = empty_keras_home / "models"
    assert (
        cache_path("mobilenet_v2", 160)
        == models / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"
    )
    # Sizes without their own weights use the 224 px file, as keras.applications does.
    assert cache_path("mobilenet_v2", 150).name.endswith("_1.0_224_no_top.h5")
    assert cache_path("efficientnet_v2_b0", 192) == models / "efficientnetv2-b0_notop.h5"


def test_offline_without_weights_is_a_clear_error(empty_keras_home: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_weights("efficientnet_v2_b0", 192, offline=True)
    message = str(caught.value)
    assert "efficientnet_v2_b0" in message
    assert str(empty_keras_home / "models" / "efficientnetv2-b0_notop.h5") in message
    assert "--weights PATH" in message and "--arch scratch-cnn" in message


def test_offline_env_variable(empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="offline"):
        resolve_weights("mobilenet_v2", 160)


def test_cached_file_is_used_without_download(
    empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = cache_path("mobilenet_v2", 160)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    monkeypatch.setattr("keras.utils.get_file", _no_download)
    found = resolve_weights("mobilenet_v2", 160, offline=True)
    assert found.path == str(cached)
    assert found.source.startswith("keras-cache:")


def _no_download(*args: object, **kwargs: object) -> str:
    raise AssertionError("must not download")


def test_failed_download_is_a_clear_error(empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def failing_get_file(*args: object, **kwargs: object) -> str:
        import socket

        seen["timeout"] = socket.getdefaulttimeout()
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.utils.get_file", failing_get_file)
    with pytest.raises(WeightsUnavailableError, match=r"download from https://\S+ failed.*name resolution"):
        resolve_weights("mobilenet_v2", 128, offline=False)
    assert seen["timeout"] == weights_module.DOWNLOAD_TIMEOUT_S  # a firewall cannot hang the run


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_weights("mobilenet_v2", 128, tmp_path / "nope.weights.h5")


def test_cli_offline_error_exits_2(
    empty_keras_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_class_folders(tmp_path / "ds", train_per_class=2, val_per_class=1, junk=False)
    args = ["train", "--data-dir", str(data), "--output", str(tmp_path / "out"), "--arch", "mobilenet_v2"]
    assert main([*args, "--offline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no ImageNet weights for mobilenet_v2")
    assert str(empty_keras_home / "models") in err
    assert not (tmp_path / "out").exists()
