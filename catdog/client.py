"""A Python client for the catdog service: `Client` (sync) and `AsyncClient` (asyncio), on httpx.

    from catdog.client import Client

    with Client("http://127.0.0.1:8000") as client:
        answer = client.predict("cat.jpg")          # a path, or the image bytes
        print(answer.label, answer.probabilities)   # 'cat' {'cat': 0.99, 'dog': 0.01}
        items = client.predict_batch(["a.jpg", "b.png"])

Results are typed (pydantic models mirroring the service's JSON). An error answer raises
`CatdogError` with the service's status, `code`, `message` and request id. A 503 (not ready, or
at capacity) is retried after the `Retry-After` the service sends, up to `retries` times, and only
then raised (`ServiceUnavailableError`).

Only httpx and pydantic are imported: the client loads neither TensorFlow nor the web stack.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({503})

ImageSource = bytes | str | Path


class Timing(BaseModel):
    decode_ms: float
    queue_ms: float
    inference_ms: float
    batch_size: int


class Prediction(BaseModel):
    """One image's answer: the cat-vs-dog label and probabilities, and the pet flag when the model
    has one (`pet_score` / `is_cat_or_dog` are None otherwise)."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    pet_score: float | None = None
    is_cat_or_dog: bool | None = None


class PredictionResult(Prediction):
    """`POST /predict`: one image, with the model version and the server's timings."""

    # The repository version that answered (None from a server older than this field).
    version: str | None = None
    model_version: str
    latency_ms: float
    timing: Timing | None = None


class BatchItem(Prediction):
    index: int
    filename: str | None = None


class BatchResult(BaseModel):
    """`POST /predict/batch`: one answer per image, in order."""

    predictions: list[BatchItem]
    version: str | None = None
    model_version: str
    latency_ms: float


class Readiness(BaseModel):
    status: str
    version: str | None = None
    model_version: str
    # What runs the model, e.g. "litert-fp32" (None from a server older than this field).
    runtime: str | None = None
    # The pet_score threshold in force and where it comes from (None: the model has no pet_score).
    pet_threshold: float | None = None
    pet_threshold_source: str | None = None
    queue_depth: int
    # The model runtime's threads and where the count comes from ({"count": 2, "source": "..."}).
    threads: dict[str, Any] | None = None


class CatdogError(Exception):
    """The service answered with an error (or could not be reached: `status_code` 0)."""

    def __init__(
        self, status_code: int, code: str, message: str, details: Any = None, request_id: str | None = None
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}" if status_code else message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id


class ServiceUnavailableError(CatdogError):
    """503 after every retry: the model is not ready, or the service stayed at capacity."""


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """A `Retry-After` header: delay-seconds or an HTTP date; `default` when absent or unreadable."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error(response: httpx.Response) -> CatdogError:
    request_id = response.headers.get("x-request-id")
    code, message, details = "http_error", response.text[:500] or response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # the service's {"error": {"code", "message", "details"}}
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            details = error.get("details")
        elif isinstance(error, str):  # the V2 / TF Serving protocols' {"error": "..."}
            message = error
    kind = ServiceUnavailableError if response.status_code == 503 else CatdogError
    return kind(response.status_code, code, message, details, request_id)


def _pinned(version: str | None) -> dict[str, str]:
    return {} if version is None else {"version": version}


def _image_part(image: ImageSource, name: str | None) -> tuple[str, bytes, str]:
    if isinstance(image, bytes):
        return (name or "image", image, "application/octet-stream")
    path = Path(image)
    return (name or path.name, path.read_bytes(), "application/octet-stream")


M = TypeVar("M", bound=BaseModel)


class _Base:
    def __init__(self, retries: int, max_retry_wait: float) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self.max_retry_wait = max_retry_wait

    def _delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying `response`, or None to give up."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        return min(retry_after_seconds(response.headers.get("retry-after")), self.max_retry_wait)


class Client(_Base):
    """Synchronous client. `retries`: how many times a 503 is retried (after its Retry-After, capped at
    `max_retry_wait` seconds). `transport` is passed to httpx (tests use it to mount an app)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        max_retry_wait: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(retries, max_retry_wait)
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise CatdogError(0, "unreachable", f"{self.http.base_url}: {exc}") from exc
            delay = self._delay(response, attempt)
            if delay is None:
                break
            time.sleep(delay)
            attempt += 1
        if response.is_error:
            raise _error(response)
        return response

    def _get(self, path: str, model: type[M]) -> M:
        return model.model_validate(self._request("GET", path).json())

    def predict(
        self, image: ImageSource, filename: str | None = None, version: str | None = None
    ) -> PredictionResult:
        """Classify one image: a path, or its bytes. `version`: a model version or label to answer it."""
        response = self._request(
            "POST", "/predict", files={"file": _image_part(image, filename)}, params=_pinned(version)
        )
        return PredictionResult.model_validate(response.json())

    def predict_batch(self, images: Sequence[ImageSource], version: str | None = None) -> BatchResult:
        """Classify several images in one request (at most the service's CATDOG_MAX_BATCH_FILES)."""
        files = [("files", _image_part(image, None)) for image in images]
        response = self._request("POST", "/predict/batch", files=files, params=_pinned(version))
        return BatchResult.model_validate(response.json())

    def ready(self) -> Readiness:
        """`GET /readyz`, retried while the service answers 503 (`retries` times)."""
        return self._get("/readyz", Readiness)

    def live(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = self._request("GET", "/metadata").json()
        return document

    def wait_ready(self, timeout: float) -> Readiness:
        """Poll until the service is ready; `TimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = self.http.get("/readyz")
                if response.status_code == 200:
                    return Readiness.model_validate(response.json())
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.http.base_url} was not ready within {timeout} s")
            time.sleep(0.2)


class AsyncClient(_Base):
    """The asyncio twin of `Client`: the same methods, awaited."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        max_retry_wait: float = 30.0,
        headers: dict[str, str] | None = None,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(retries, max_retry_wait)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=headers, limits=limits, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise CatdogError(0, "unreachable", f"{self.http.base_url}: {exc}") from exc
            delay = self._delay(response, attempt)
            if delay is None:
                break
            await asyncio.sleep(delay)
            attempt += 1
        if response.is_error:
            raise _error(response)
        return response

    async def predict(
        self, image: ImageSource, filename: str | None = None, version: str | None = None
    ) -> PredictionResult:
        response = await self._request(
            "POST", "/predict", files={"file": _image_part(image, filename)}, params=_pinned(version)
        )
        return PredictionResult.model_validate(response.json())

    async def predict_batch(self, images: Sequence[ImageSource], version: str | None = None) -> BatchResult:
        files = [("files", _image_part(image, None)) for image in images]
        response = await self._request("POST", "/predict/batch", files=files, params=_pinned(version))
        return BatchResult.model_validate(response.json())

    async def ready(self) -> Readiness:
        return Readiness.model_validate((await self._request("GET", "/readyz")).json())

    async def metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = (await self._request("GET", "/metadata")).json()
        return document
