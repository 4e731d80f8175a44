"""Where the ImageNet weights of a transfer backbone come from.

In order: an explicit `--weights PATH`; the file Keras itself would have cached
(`$KERAS_HOME/models/<name>`, KERAS_HOME defaulting to ~/.keras); a download through Keras's
`get_file` into that cache, with a socket timeout so a firewalled machine fails instead of
hanging, and never when offline (`--offline` or CATDOG_OFFLINE=1). When all of these fail the
error names the backbone, the cache path and the three ways to fix it.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from training.errors import WeightsUnavailableError

logger = logging.getLogger("catdog.training.weights")

OFFLINE_ENV = "CATDOG_OFFLINE"
DOWNLOAD_TIMEOUT_S = 30.0

_KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
# Sizes MobileNetV2 has ImageNet weights for; any other input size gets the 224 px weights (the
# convolution kernels do not depend on the input size), exactly as keras.applications does.
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
# md5 Keras checks for the EfficientNetV2-B0 no-top file (keras.applications.efficientnet_v2).
_EFFICIENTNET_V2_B0_NOTOP_MD5 = "893217f2bb855e2983157299931e43ff"


@dataclass(frozen=True)
class WeightsFile:
    path: str | None  # None: random initialization (not used by the CLI)
    source: str  # "file:<path>", "keras-cache:<path>" or "download:<url>"


@dataclass(frozen=True)
class _RemoteWeights:
    file_name: str
    url: str
    md5: str | None


def keras_home() -> Path:
    """Keras's cache root, read from the environment now (Keras itself reads it once at import)."""
    return Path(os.environ.get("KERAS_HOME") or Path("~/.keras")).expanduser()


def offline_from_env() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def remote_weights(arch: str, image_size: int) -> _RemoteWeights:
    """The file name keras.applications would download for this backbone without its top."""
    if arch == "mobilenet_v2":
        rows = image_size if image_size in _MOBILENET_V2_SIZES else 224
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        return _RemoteWeights(name, _KERAS_APPLICATIONS_URL + "mobilenet_v2/" + name, None)
    if arch == "efficientnet_v2_b0":
        name = "efficientnetv2-b0_notop.h5"
        return _RemoteWeights(
            name, _KERAS_APPLICATIONS_URL + "efficientnet_v2/" + name, _EFFICIENTNET_V2_B0_NOTOP_MD5
        )
    raise ValueError(f"no ImageNet weights are known for {arch!r}")


def cache_path(arch: str, image_size: int) -> Path:
    return keras_home() / "models" / remote_weights(arch, image_size).file_name


def _unavailable(arch: str, cached: Path, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"no ImageNet weights for {arch}: {why}; looked for {cached}. Fix: pass --weights PATH "
        f"(the backbone's no-top weights file), copy that file to {cached}, or train from scratch "
        "with --arch scratch-cnn"
    )


def resolve_weights(
    arch: str, image_size: int, weights_path: str | Path | None = None, offline: bool | None = None
) -> WeightsFile:
    """Find (or download) the backbone weights file; raise WeightsUnavailableError if impossible."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"--weights file {path} does not exist")
        return WeightsFile(str(path), f"file:{path}")

    remote = remote_weights(arch, image_size)
    cached = cache_path(arch, image_size)
    if cached.is_file() and cached.stat().st_size > 0:
        logger.info("using cached %s weights %s", arch, cached)
        return WeightsFile(str(cached), f"keras-cache:{cached}")

    if offline is None:
        offline = offline_from_env()
    if offline:
        raise _unavailable(arch, cached, f"offline (--offline or {OFFLINE_ENV}=1) and not in the Keras cache")

    import keras

    logger.info("downloading %s weights from %s", arch, remote.url)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        downloaded = keras.utils.get_file(
            remote.file_name,
            remote.url,
            cache_dir=str(keras_home()),
            cache_subdir="models",
            file_hash=remote.md5,
        )
    except Exception as exc:  # URLError, timeouts, hash mismatch: all mean "no weights"
        raise _unavailable(arch, cached, f"download from {remote.url} failed ({exc})") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return WeightsFile(str(downloaded), f"download:{remote.url}")
