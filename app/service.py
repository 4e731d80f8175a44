"""The prediction service: the one place that turns uploaded image bytes into prediction answers.

Every image goes the same way, for /predict and /predict/batch alike:

  decode   bytes -> uint8 RGB array in a worker thread, within the shared memory budget
           (app/decoding.py, on catdog.imaging, the pipeline training uses); a bad image is a 400
           or 413 naming the file
  alone    a lone /predict image, with nothing else queued or being decoded, goes through the model
           in that same thread (DynamicBatcher.try_alone): one thread hop for the whole request
  admit    into the batcher's bounded queue, all of a request's images or none; 503 when full
  batch    wait for the shared model call the batcher forms (app/batching.py)
  describe class probabilities -> label, confidence, pet flag, and the request's timings

It also decides readiness (`ServiceState.require_ready`) and writes the only `Retry-After` header
the service sends: a 503 always tells the client when to come back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from app.batching import BatcherClosedError, BatchResult, DynamicBatcher, InferenceError, QueueFullError
from app.decoding import Decoded, Decoder
from app.errors import (
    APIError,
    InferenceFailedError,
    OverloadedError,
    ServiceNotReadyError,
    TooLargeError,
    TooManyFilesError,
    UnknownVersionError,
    image_bytes_too_large,
)
from app.metrics import ServiceMetrics
from app.model import ImageScores
from app.model_versions import LiveVersion, ModelVersions, NotReadyError, VersionNotFoundError
from app.settings import Settings
from app.signature import ImageAnswer, TensorSpec
from app.signature import outputs as signature_outputs
from catdog.cpus import process_cpus
from catdog.saved_model import ExportedModel

T = TypeVar("T")


@dataclass
class ServiceState:
    """What the app's lifespan sets up and tears down; routes get a ready `PredictionService` from it."""

    settings: Settings
    metrics: ServiceMetrics
    # Loaded before the app was built (python -m app serve does, to fail before binding a port);
    # when None the lifespan loads it itself.
    preloaded: ExportedModel | None = None
    # The loaded model versions (app/model_versions.py); None until the lifespan has loaded one.
    versions: ModelVersions | None = None
    # Shared by every request and every version: the decoding threads and their memory budget.
    decoder: Decoder = field(init=False)

    def __post_init__(self) -> None:
        self.decoder = Decoder(
            self.settings.max_image_pixels, self.settings.decode_memory_bytes, self.metrics.registry
        )

    def ready_service(self) -> PredictionService | None:
        """The readiness check: a default version is loaded and warmed up and its batcher runs."""
        live = self._ready_default()
        return None if live is None else self._service(live)

    def _ready_default(self) -> LiveVersion | None:
        if self.versions is None or not self.decoder.running:
            return None
        live = self.versions.default
        return None if live is None or not live.batcher.running else live

    @property
    def ready(self) -> bool:
        return self.ready_service() is not None

    def require_ready(self, version: str | None = None) -> PredictionService:
        """The service answering with `version` (a number or a label; None: the default version).

        503 `not_ready` with Retry-After until a version is loaded; 404 `version_not_found`.
        """
        if version is None:
            service = self.ready_service()
            if service is None:
                raise self._not_ready()
            return service
        return self._service(self._resolve(version))

    def check_ready(self, version: str | None = None) -> None:
        """`require_ready`'s errors, without building the service (a request's check before its body)."""
        if version is None:
            if self._ready_default() is None:
                raise self._not_ready()
        else:
            self._resolve(version)

    @contextmanager
    def serve(self, version: str | None = None) -> Iterator[PredictionService]:
        """`require_ready`, holding the version for the block: it is not unloaded before the answer."""
        versions = self._versions()
        with self._version_errors():
            live = versions.acquire(version)
        try:
            if not live.batcher.running:
                raise self._not_ready()
            yield self._service(live)
        finally:
            versions.release(live)

    def _resolve(self, version: str) -> LiveVersion:
        with self._version_errors():
            return self._versions().resolve(version)

    @contextmanager
    def _version_errors(self) -> Iterator[None]:
        """The versions' errors as the service's: 503 `not_ready`, 404 `version_not_found`."""
        try:
            yield
        except NotReadyError:
            raise self._not_ready() from None
        except VersionNotFoundError as exc:
            raise UnknownVersionError(str(exc)) from None

    def _versions(self) -> ModelVersions:
        if self.versions is None or not self.decoder.running:
            raise self._not_ready()
        return self.versions

    def _service(self, live: LiveVersion) -> PredictionService:
        return PredictionService(self.settings, live.model, live.batcher, self.decoder, live.number)

    def _not_ready(self) -> ServiceNotReadyError:
        return ServiceNotReadyError(
            "the model is not loaded and warmed up yet, or the service is shutting down",
            self.settings.retry_after_seconds,
        )


@dataclass(frozen=True)
class EncodedImage:
    """An image as a client sent it (JPEG, PNG, ... bytes), and the name errors call it by."""

    data: bytes
    name: str | None = None


@dataclass(frozen=True)
class Timings:
    """Where a lone image's time went, in ms from the request's arrival."""

    decode_ms: float
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass(frozen=True)
class Prediction:
    """The core's answer to one request: one `ImageAnswer` per image, in order, and who answered."""

    answers: list[ImageAnswer]
    version: int  # the repository version that answered
    model_version: str  # that version's own, from its metadata.json
    latency_ms: float
    timings: Timings | None = None  # for a lone image


@dataclass(frozen=True)
class PredictionService:
    """The prediction core: encoded images or pixel tensors in, per-image answers out, domain errors
    (app/errors.py) for what cannot be answered. It speaks no wire format: the fronts (app/routes.py,
    app/protocols/) decode their requests into its inputs and encode its `Prediction`.

    `started` is when the request arrived (`time.perf_counter()`): latency and decode times count
    from there, reading the request included."""

    settings: Settings
    model: ExportedModel
    batcher: DynamicBatcher[ImageScores]
    decoder: Decoder
    version: int = 1  # the repository version this service answers with

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs (app/signature.py): what every answer holds."""
        return signature_outputs(len(self.model.metadata.class_names), self.model.metadata.has_pet_score)

    async def classify_one(self, image: EncodedImage, started: float) -> Prediction:
        """One image, with its timings. Alone (nothing else queued or being decoded), the model runs
        in the thread that decoded it: one thread hop for the whole request."""
        self._check_size(image)
        with self.batcher.announce():
            decoded = await self._decode(image, alone=True)
        result = decoded.then or (await self._admit_and_batch([decoded.pixels]))[0]
        timings = Timings(
            decode_ms=_ms(decoded.at - started),
            queue_ms=_ms(result.queue_seconds),
            inference_ms=_ms(result.inference_seconds),
            batch_size=result.batch_size,
        )
        return self._prediction([result], started, timings)

    async def classify_many(self, images: Sequence[EncodedImage], started: float) -> Prediction:
        """All images or none: one bad image fails the request, and its details name every bad one."""
        self._check_count(len(images))
        for image in images:
            self._check_size(image)
        # One request's images decode at most (CPUs - 1) at a time: a batch of heavy images leaves a
        # CPU to the other requests instead of queueing every decode thread behind its own images.
        turns = asyncio.Semaphore(max(1, process_cpus().count - 1))

        async def decode_in_turn(image: EncodedImage) -> Decoded[BatchResult[ImageScores]]:
            async with turns:
                return await self._decode(image)

        with self.batcher.announce(len(images)):
            outcomes = await asyncio.gather(
                *(decode_in_turn(image) for image in images), return_exceptions=True
            )
        failures = [
            (index, image, outcome)
            for index, (image, outcome) in enumerate(zip(images, outcomes, strict=True))
            if isinstance(outcome, APIError)
        ]
        if failures:
            # The whole request fails with the first bad image's status.
            first = failures[0][2]
            raise APIError(
                first.status_code,
                first.code,
                f"{len(failures)} of {len(images)} files could not be used; first: {first.message}",
                [
                    {"index": index, "filename": image.name, "code": error.code, "message": error.message}
                    for index, image, error in failures
                ],
            )
        pixels = [_image_or_raise(outcome).pixels for outcome in outcomes]
        return self._prediction(await self._admit_and_batch(pixels), started)

    async def classify_pixels(self, images: np.ndarray, started: float) -> Prediction:
        """Pixels a client decoded itself: a uint8 [N, H, W, 3] tensor, squashed to the model's input
        size as decoding does, then the same limits, admission and batcher as encoded images."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
            raise APIError(
                400,
                "invalid_tensor",
                f"expected a uint8 tensor of shape [N, H, W, 3], got {images.dtype} {list(images.shape)}",
            )
        count, height, width = (int(dim) for dim in images.shape[:3])
        self._check_count(count)
        if height * width > self.settings.max_image_pixels:
            raise TooLargeError(
                "image_too_large",
                f"image is {width}x{height} = {width * height} pixels, over the limit of "
                f"{self.settings.max_image_pixels} pixels",
                {"max_image_pixels": self.settings.max_image_pixels},
            )
        size = self.model.metadata.image_size
        rows = list(images)
        if (height, width) != (size, size):
            with self.batcher.announce(count):
                rows = await self.decoder.squash(rows, size)
        return self._prediction(await self._admit_and_batch(rows), started)

    def _check_count(self, count: int) -> None:
        if count > self.settings.max_batch_files:
            raise TooManyFilesError(count, self.settings.max_batch_files)

    def _check_size(self, image: EncodedImage) -> None:
        if len(image.data) > self.settings.max_upload_bytes:
            raise image_bytes_too_large(image.name, len(image.data), self.settings.max_upload_bytes)

    async def _decode(self, image: EncodedImage, alone: bool = False) -> Decoded[BatchResult[ImageScores]]:
        """Decode (app/decoding.py); `alone`: also run the model in the decoding thread when the
        batcher is idle (DynamicBatcher.try_alone)."""
        then = self.batcher.try_alone if alone else None
        try:
            return await self.decoder.decode(image.data, self.model.metadata.image_size, image.name, then)
        except InferenceError as exc:  # the lone path's model call
            raise InferenceFailedError() from exc

    async def _admit_and_batch(self, images: list[np.ndarray]) -> list[BatchResult[ImageScores]]:
        try:
            return await self.batcher.submit_many(images)
        except QueueFullError as exc:
            raise OverloadedError(
                f"the service is at capacity: {exc}", self.settings.retry_after_seconds
            ) from exc
        except BatcherClosedError as exc:
            raise ServiceNotReadyError(str(exc), self.settings.retry_after_seconds) from exc
        except InferenceError as exc:
            raise InferenceFailedError() from exc

    def _prediction(
        self, results: list[BatchResult[ImageScores]], started: float, timings: Timings | None = None
    ) -> Prediction:
        return Prediction(
            [self._answer(result.output) for result in results],
            self.version,
            self.model.metadata.version,
            _ms(time.perf_counter() - started),
            timings,
        )

    def _answer(self, scores: ImageScores) -> ImageAnswer:
        """Scores -> the answer every front reports, at the 6 decimals answers carry."""
        names = self.model.metadata.class_names
        probabilities = tuple(round(float(p), 6) for p in scores.probabilities)
        best = int(np.argmax(scores.probabilities))
        threshold = self.model.pet_threshold
        pet_score = None if scores.pet_score is None else round(scores.pet_score, 6)
        return ImageAnswer(
            label=names[best],
            confidence=probabilities[best],
            probabilities=probabilities,
            pet_score=pet_score,
            # Compared as reported, so a client applying the same threshold to pet_score agrees.
            is_cat_or_dog=None if pet_score is None or threshold is None else pet_score >= threshold,
        )


def _image_or_raise(outcome: Decoded[T] | BaseException) -> Decoded[T]:
    """A decoded image, or the unexpected error its decoding raised (a bug, not a bad file)."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
