"""Response bodies, as documented in the OpenAPI schema (Swagger UI at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Timing(BaseModel):
    decode_ms: float = Field(description="Reading and decoding the upload", examples=[3.2])
    queue_ms: float = Field(description="Waiting for a batch to form", examples=[5.1])
    inference_ms: float = Field(description="The batched model call", examples=[9.8])
    batch_size: int = Field(description="Images in the model call this one was part of", examples=[4])


class Prediction(BaseModel):
    label: str = Field(description="The most probable class", examples=["cat"])
    confidence: float = Field(description="Probability of `label`", examples=[0.97])
    probabilities: dict[str, float] = Field(
        description="Probability per class; sums to 1", examples=[{"cat": 0.97, "dog": 0.03}]
    )


class PredictionResponse(Prediction):
    model_version: str = Field(examples=["scratch-cnn-20261124-1a2b3c4d"])
    latency_ms: float = Field(description="Server time spent on this request", examples=[18.4])
    timing: Timing


class BatchItem(Prediction):
    index: int = Field(description="Position of the file in the request")
    filename: str | None = None


class BatchPredictionResponse(BaseModel):
    predictions: list[BatchItem]
    model_version: str
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


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    model_version: str
    queue_depth: int
