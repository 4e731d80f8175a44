"""The one typed training configuration: presets fill it, command-line flags override it, and
metadata.json records it. The CLI's `train` options are generated from these fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PositiveFloat, ValidationError, model_validator

from training.errors import ConfigError
from training.weights import OFFLINE_ENV, offline_from_env

SCHEDULES = ("cosine", "constant")
FIT_ON = ("all", "train")
# Set on fields that are not command-line flags (the path arguments are added by hand).
_NOT_A_FLAG: dict[str, JsonValue] = {"flag": False}


class TrainConfig(BaseModel):
    """Every setting of a training run. Field descriptions are the CLI's help texts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(json_schema_extra=_NOT_A_FLAG)
    output: Path = Field(json_schema_extra=_NOT_A_FLAG)
    preset: str = Field("default", json_schema_extra=_NOT_A_FLAG)

    arch: str = Field(
        description="architecture: scratch-cnn, small-cnn, mobilenet_v2, efficientnet_v2_b0, or "
        "efficientnet_lite0/1/2, optionally at another input size (efficientnet_lite2@340), joined by '+' "
        "for an ensemble of concatenated features"
    )
    image_size: int | None = Field(
        None, description="square input size in pixels (pretrained: the largest member's size)"
    )
    epochs: int = Field(0, ge=0, description="training epochs (scratch and keras.applications models)")
    batch_size: int = Field(32, ge=1, description="images per step (and per feature-extraction batch)")
    learning_rate: float = Field(1e-3, gt=0, description="learning rate of the first phase")
    schedule: str = Field("constant", description="learning-rate schedule: cosine or constant")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs before the cosine decay")
    fine_tune_epochs: int = Field(0, ge=0, description="epochs of end-to-end fine-tuning (pretrained)")
    fine_tune_lr: float = Field(1e-5, gt=0, description="learning rate of the fine-tune phase")
    augment: bool = Field(True, description="random flips/crops (and more for scratch models)")
    flip_tta: bool = Field(False, description="export a graph that averages each image with its mirror image")
    head_c: tuple[PositiveFloat, ...] = Field(
        (0.01, 0.03, 0.1, 0.3, 1.0),
        min_length=1,
        description="pretrained: inverse L2 strengths tried for the logistic head, comma-separated; "
        "the one with the lowest cross-validated log loss is kept",
    )
    head_features: str = Field(
        "sqrt", description="pretrained: the head reads sqrt (square roots of the pooled features) or linear"
    )
    fit_on: str = Field(
        "all",
        description="pretrained: fit the head on all photos (train/ and validation/: only the "
        "cross-validated figures are out of sample) or on train (validation/ held out)",
    )
    cv_folds: int = Field(10, ge=2, description="pretrained: cross-validation folds")
    cv_repeats: int = Field(3, ge=1, description="pretrained: cross-validation repeats, each with new folds")
    pet_neighbours: int = Field(
        10, ge=1, description="pretrained: training photos the pet score averages the similarity to"
    )
    # Half the goal of flagging at most 0.5% of real pets: a share measured on 1000 new pets varies by
    # about 0.2 points around the rate the threshold is set at.
    ood_quantile: float = Field(
        0.0025,
        gt=0,
        lt=0.5,
        description="pretrained: the cat-or-dog threshold lets at most this fraction of training photos "
        "fall below it",
    )
    weights: str | None = Field(None, description="backbone weights file (.pth or .weights.h5, or keras .h5)")
    offline: bool = Field(
        default_factory=offline_from_env, description=f"never download (also {OFFLINE_ENV}=1)"
    )
    seed: int = Field(42, description="random seed (data split, shuffling, augmentation)")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="held out when the data has no validation split")
    limit_per_class: int | None = Field(None, ge=1, description="use the first N files per class per split")
    version: str | None = Field(None, description="model version (default <arch>-<YYYYMMDD>-<data hash>)")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        # Imported here: the CLI builds its flags from this class, and must not wait for Keras.
        from training.architectures import SCRATCH_ARCHITECTURES, TRANSFER_ARCHITECTURES, check_architecture

        if is_pretrained(self.arch):
            from training.features import TRANSFORMS

            backbones(self.arch)  # raises ConfigError on an unknown backbone or size
            if self.weights is not None and "+" in self.arch:
                raise ConfigError(
                    "--weights names one backbone's file; an ensemble takes its weights from packages"
                )
            if self.fine_tune_epochs and ("+" in self.arch or self.fit_on != "train"):
                raise ConfigError(
                    "--fine-tune-epochs needs one backbone and --fit-on train: validation decides"
                )
            if self.head_features not in TRANSFORMS:
                raise ConfigError(f"--head-features must be one of {', '.join(TRANSFORMS)}")
            if self.fit_on not in FIT_ON:
                raise ConfigError(f"--fit-on must be one of {', '.join(FIT_ON)}")
            return self
        check_architecture(self.arch)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.epochs < 1:
            raise ConfigError("--epochs must be at least 1")
        minimum = 32 if self.arch in TRANSFER_ARCHITECTURES else 16
        if self.image_size is None or self.image_size < minimum:
            raise ConfigError(
                f"--image-size must be at least {minimum} for {self.arch}, got {self.image_size}"
            )
        if self.fine_tune_epochs and self.arch in SCRATCH_ARCHITECTURES:
            raise ConfigError(f"--fine-tune-epochs needs a pretrained backbone; {self.arch} has none")
        if self.weights is not None and self.arch in SCRATCH_ARCHITECTURES:
            raise ConfigError(f"--weights is for pretrained backbones; {self.arch} has none")
        return self

    @property
    def input_size(self) -> int:
        """The exported model's input size (pretrained: the largest member's size)."""
        if self.image_size is not None:
            return self.image_size
        return max(size for _, size in self.members)

    @property
    def members(self) -> tuple[tuple[str, int], ...]:
        """Pretrained: each backbone with the input size it runs at."""
        from training.features import parse_members

        return parse_members(self.arch)

    def recorded(self) -> dict[str, Any]:
        """The settings as metadata.json records them (paths as strings)."""
        return self.model_dump(mode="json")


def is_pretrained(arch: str) -> bool:
    return arch.startswith("efficientnet_lite")


def backbones(arch: str) -> tuple[str, ...]:
    from training.features import parse_members

    return tuple(name for name, _ in parse_members(arch))


def flag_fields() -> dict[str, Any]:
    """The fields that are command-line flags, name -> pydantic FieldInfo."""
    return {
        name: info
        for name, info in TrainConfig.model_fields.items()
        if (info.json_schema_extra or {}) != _NOT_A_FLAG
    }


def make_config(
    data_dir: Path | str, output: Path | str, preset: str | None = None, **overrides: Any
) -> TrainConfig:
    """Preset values, overridden by every non-None keyword (the command-line flags)."""
    from training.presets import DEFAULT_PRESET, PRESET_FOR_ARCH, PRESETS

    overrides = {key: value for key, value in overrides.items() if value is not None}
    if preset is None:
        arch = overrides.get("arch")
        preset = PRESET_FOR_ARCH.get(arch, DEFAULT_PRESET) if isinstance(arch, str) else DEFAULT_PRESET
        if isinstance(arch, str) and is_pretrained(arch) and arch not in PRESET_FOR_ARCH:
            preset = PRESET_FOR_ARCH["efficientnet_lite0"]
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    unknown = set(overrides) - set(flag_fields())
    if unknown:
        raise ConfigError(f"unknown training options: {', '.join(sorted(unknown))}")
    values = {**PRESETS[preset].settings, **overrides}
    try:
        return TrainConfig(data_dir=Path(data_dir), output=Path(output), preset=preset, **values)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(problems) from None
