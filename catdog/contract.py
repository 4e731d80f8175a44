"""The export contract: what `training` writes into a model directory and `app` reads from it.

A model directory holds a TensorFlow SavedModel (`saved_model.pb` + `variables/`) and
`metadata.json`. Its `serving_default` signature takes `images`, a uint8 batch [N, H, W, 3] of any
H, W (resizing and pixel scaling happen inside the graph), and returns:
- `probabilities`: float32 [N, len(class_names)], columns in `class_names` order;
- `pet_score` (optional, models with an ImageNet head): float32 [N], the probability that the
  image shows a cat or a dog at all; `metadata.ood.threshold` is the cut-off the model was
  measured with.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SAVED_MODEL_FILE = "saved_model.pb"
METADATA_FILE = "metadata.json"
SIGNATURE_NAME = "serving_default"
SIGNATURE_INPUT = "images"
PROBABILITIES = "probabilities"
PET_SCORE = "pet_score"
CLASS_NAMES: tuple[str, ...] = ("cat", "dog")
# How far a runtime's answers on the probe images may move between the machine that checked a model
# and the one serving it: bfloat16 moves them by ~1e-2, float32 kernels that sum in another order by ~1e-6.
PROBE_TOLERANCE = 1e-3


class OutOfDistribution(BaseModel):
    """How `pet_score` was calibrated: images scoring below `threshold` are "neither cat nor dog"."""

    model_config = ConfigDict(extra="allow")

    threshold: float = Field(ge=0.0, le=1.0)
    method: str = ""
    # Measured at export time: training pets wrongly flagged, real non-pet photos passed as pets.
    pets_flagged_rate: float | None = None
    non_pets_passed_rate: float | None = None


class ProbeRecord(BaseModel):
    """A model's outputs on `catdog.probe.probe_images`, recorded where it was made and checked where
    it loads (catdog/probe.py): output name -> values, as the model returned them."""

    outputs: dict[str, list[Any]] = Field(min_length=1)
    tolerance: float = Field(default=PROBE_TOLERANCE, gt=0.0)


class DerivedModel(BaseModel):
    """A model derived from the SavedModel for a faster CPU runtime (`python -m training derive`).

    `file` is relative to the model directory; `passed` says whether it answered like the SavedModel
    on real photos (`equivalence` holds the figures); `speedup` is its speed relative to TensorFlow,
    measured at derive time in interleaved rounds (geometric mean of batch 1 and batch 16), which is
    what CATDOG_RUNTIME=auto ranks by.
    """

    model_config = ConfigDict(extra="allow")

    runtime: str = Field(min_length=1)
    precision: str = Field(min_length=1)
    file: str = Field(min_length=1)
    sha256: str = ""
    passed: bool = False
    reason: str = ""
    speedup: float = Field(default=0.0, ge=0.0)
    equivalence: dict[str, Any] = Field(default_factory=dict)
    speed: dict[str, Any] = Field(default_factory=dict)
    # Its answers on the probe images where it was checked (absent in older metadata: not checked).
    probe: ProbeRecord | None = None
    # The pet_score threshold calibrated on this model's own scores (absent: the SavedModel's is used).
    ood_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    @property
    def key(self) -> str:
        return f"{self.runtime}-{self.precision}"


class ModelMetadata(BaseModel):
    """metadata.json: validated when training writes it and when any caller loads a model.

    Only the fields either side relies on are typed; everything else a run records (training
    settings, metrics, weights provenance) is kept as it is.
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    version: str = Field(min_length=1)
    architecture: str = Field(min_length=1)
    class_names: list[str]
    image_size: int = Field(gt=0)
    outputs: list[str] = Field(default_factory=lambda: [PROBABILITIES])
    ood: OutOfDistribution | None = None
    # Models derived for other CPU runtimes (absent in older metadata.json: none).
    derived: list[DerivedModel] = Field(default_factory=list)
    # The SavedModel's answers on the probe images where it was exported (absent: not checked).
    probe: ProbeRecord | None = None

    @field_validator("class_names")
    @classmethod
    def _known_classes(cls, value: list[str]) -> list[str]:
        if tuple(value) != CLASS_NAMES:
            raise ValueError(f"class_names must be {list(CLASS_NAMES)}, got {value}")
        return value

    @field_validator("outputs")
    @classmethod
    def _known_outputs(cls, value: list[str]) -> list[str]:
        if PROBABILITIES not in value or not set(value) <= {PROBABILITIES, PET_SCORE}:
            raise ValueError(f"outputs must be {PROBABILITIES!r} and optionally {PET_SCORE!r}, got {value}")
        return value

    @property
    def has_pet_score(self) -> bool:
        return PET_SCORE in self.outputs

    def public_document(self) -> dict[str, Any]:
        """The metadata as JSON-ready data with no path of the machine that made it: what /metadata
        publishes and metadata.json stores (see `without_machine_paths`)."""
        document: dict[str, Any] = without_machine_paths(self.model_dump(mode="json"))
        return document

    def to_json(self) -> str:
        return json.dumps(self.public_document(), indent=2, sort_keys=True, default=str) + "\n"


def _is_machine_path(value: str) -> bool:
    """An absolute, home- or parent-relative path: it names a place on one machine, not in the export."""
    if "\n" in value or len(value) > 4096:
        return False
    return (
        PurePosixPath(value).is_absolute()
        or PureWindowsPath(value).drive != ""
        or value.startswith(("~", "../", "..\\"))
    )


def without_machine_paths(document: Any) -> Any:
    """`document` with every machine path (absolute, `~` or `..` first) cut to its last component:
    a training run records where its photos, weights and output were, and a served model must not
    publish the layout of the machine it was trained on. Paths inside the export (`derived/...`) stay."""
    if isinstance(document, dict):
        return {key: without_machine_paths(value) for key, value in document.items()}
    if isinstance(document, list):
        return [without_machine_paths(value) for value in document]
    if isinstance(document, str) and _is_machine_path(document):
        return PurePosixPath(document.replace("\\", "/")).name
    return document


class MetadataError(ValueError):
    """metadata.json is missing, unreadable or does not follow the schema."""


def read_metadata(model_dir: Path) -> ModelMetadata:
    path = Path(model_dir) / METADATA_FILE
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        return ModelMetadata.model_validate(raw)
    except (OSError, ValueError) as exc:  # ValidationError is a ValueError
        detail = _validation_summary(exc) if isinstance(exc, ValidationError) else str(exc)
        raise MetadataError(f"cannot use {path}: {detail}") from exc


def write_metadata(model_dir: Path, metadata: ModelMetadata | dict[str, Any]) -> ModelMetadata:
    """Validate, then write metadata.json; returns the validated metadata."""
    validated = metadata if isinstance(metadata, ModelMetadata) else ModelMetadata.model_validate(metadata)
    (Path(model_dir) / METADATA_FILE).write_text(validated.to_json(), encoding="utf-8")
    return validated


def _validation_summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
