"""Response bodies, as documented in the OpenAPI schema (Swagger UI at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class Timing(BaseModel):
    decode_ms: float = Field(description="Reading and decoding the upload", examples=[3.2])
    queue_ms: float = Field(description="Waiting for a batch to form", examples=[5.1])
    inference_ms: float = Field(description="The batched model call", examples=[9.8])
    batch_size: int = Field(description="Images in the model call this one was part of", examples=[4])


class Prediction(BaseModel):
    label: str = Field(description="The most probable class", examples=["cat"])
    confidence: float = Field(
        description="Probability of `label`, at most 0.999999: no answer claims certainty", examples=[0.97]
    )
    probabilities: dict[str, float] = Field(
        description="Probability per class, each within [0.000001, 0.999999]; sums to 1",
        examples=[{"cat": 0.97, "dog": 0.03}],
    )
    pet_score: float | None = Field(
        description="Probability that the image shows a cat or a dog at all, from the model's "
        "ImageNet head. `null` when the served model has no `pet_score` output.",
        examples=[0.994],
    )
    is_cat_or_dog: bool | None = Field(
        description="`pet_score >= threshold` (CATDOG_PET_THRESHOLD, else the threshold in the model's "
        "metadata.json, else 0.5). `false`: probably neither a cat nor a dog; `label` and "
        "`probabilities` are still the cat-vs-dog answer, only less meaningful. `null` when the "
        "model has no `pet_score` output.",
        examples=[True],
    )


_PET: dict[str, JsonValue] = {
    "label": "cat",
    "confidence": 0.97,
    "probabilities": {"cat": 0.97, "dog": 0.03},
    "pet_score": 0.994,
    "is_cat_or_dog": True,
}
_NOT_A_PET: dict[str, JsonValue] = {
    "label": "dog",
    "confidence": 0.61,
    "probabilities": {"cat": 0.39, "dog": 0.61},
    "pet_score": 0.021,
    "is_cat_or_dog": False,
}
_NO_PET_HEAD: dict[str, JsonValue] = {**_PET, "pet_score": None, "is_cat_or_dog": None}
_TIMING: dict[str, JsonValue] = {"decode_ms": 3.2, "queue_ms": 5.1, "inference_ms": 9.8, "batch_size": 4}
_VERSION = "scratch-cnn-20261124-1a2b3c4d"
_VERSION_DOC = "The model repository version that answered (`?version=` pins one)"
_MODEL_VERSION_DOC = "That version's own descriptive version, from its metadata.json"


class PredictionResponse(Prediction):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {**example, "version": "1", "model_version": _VERSION, "latency_ms": 18.4, "timing": _TIMING}
                for example in (_PET, _NOT_A_PET, _NO_PET_HEAD)
            ]
        }
    )

    version: str = Field(description=_VERSION_DOC, examples=["1"])
    model_version: str = Field(description=_MODEL_VERSION_DOC, examples=[_VERSION])
    latency_ms: float = Field(description="Server time spent on this request", examples=[18.4])
    timing: Timing


class BatchItem(Prediction):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {**_PET, "index": 0, "filename": "cat.jpg"},
                {**_NOT_A_PET, "index": 1, "filename": "teapot.png"},
            ]
        }
    )

    index: int = Field(description="Position of the file in the request")
    filename: str | None = None


class BatchPredictionResponse(BaseModel):
    predictions: list[BatchItem]
    version: str = Field(description=_VERSION_DOC, examples=["1"])
    model_version: str = Field(description=_MODEL_VERSION_DOC, examples=[_VERSION])
    latency_ms: float


class ErrorDetail(BaseModel):
    code: str = Field(examples=["undecodable_image"])
    message: str = Field(examples=["the upload is not a decodable image"])
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
    request_id: str | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Threads(BaseModel):
    count: int = Field(description="Intra-op threads the model runtime uses", examples=[2])
    source: str = Field(
        description="Where the count comes from: CATDOG_RUNTIME_THREADS, the container's CPU quota "
        "(cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, rounded up) or, without "
        "a lower quota, the CPUs the process may run on (`sched_getaffinity`)",
        examples=["cgroup v2 cpu.max 200000/100000"],
    )


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    version: str = Field(description="The model version answering requests that name none", examples=["1"])
    model_version: str = Field(description=_MODEL_VERSION_DOC, examples=[_VERSION])
    # What runs the model, and in which precision (CATDOG_RUNTIME; README "Runtimes").
    runtime: str = Field(examples=["litert-int8", "tensorflow-fp32"])
    pet_threshold: float | None = Field(
        description="The pet_score threshold in force for this runtime (`null`: no pet_score output)",
        examples=[0.5],
    )
    pet_threshold_source: str = Field(
        description="Where it comes from: CATDOG_PET_THRESHOLD, the served derived model's own "
        "calibration (`metadata.derived[<runtime>].ood_threshold`) or `metadata.ood.threshold`",
        examples=["metadata.derived[litert-int8].ood_threshold"],
    )
    queue_depth: int
    threads: Threads
