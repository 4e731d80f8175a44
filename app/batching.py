"""Server-side dynamic batching.

Concurrent requests each submit one image; a single worker groups waiting images into one model
call of up to `max_batch_size`. A partial batch waits for more only while other requests have
announced images they are still decoding, and never longer than `max_wait_s` after its oldest image
arrived: a lone request is not delayed for company that is not coming, while under load the batch
fills with the requests already on their way. The model runs in one dedicated thread, so the event
loop keeps accepting requests (and the next batch keeps filling) while TensorFlow works. The queue
is bounded: when it is full, `submit` fails fast with `QueueFullError` instead of letting latency
grow without limit.

A lone request need not pay for the hand-off at all: `try_alone`, called from the worker thread
that has just decoded the image, runs the model right there when nothing else is queued, running
or on its way (a batch of one is all the batcher would have formed). One lock around the model
keeps such a call and the batcher's own from overlapping.

The batcher does not know what a model returns: `predict` maps a stacked batch [N, ...] to N
results of any type, and each caller gets the result for its own image. Metrics go to an optional
`BatcherMetrics`, so this module imports nothing else from the service.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

logger = logging.getLogger("catdog.batching")


class QueueFullError(RuntimeError):
    """Too many images are already waiting; the client should retry later."""


class BatcherClosedError(RuntimeError):
    """The service is shutting down and takes no more work."""


class InferenceError(RuntimeError):
    """The model call itself failed."""


R = TypeVar("R")


class BatcherMetrics(Protocol):
    """What the batcher reports; `app.metrics.ServiceMetrics` implements it with Prometheus."""

    def images_rejected(self, count: int) -> None: ...

    def queue_depth_changed(self, depth: int) -> None: ...

    def batch_done(
        self, batch_size: int, inference_seconds: float, queue_seconds: Sequence[float]
    ) -> None: ...


@dataclass(frozen=True)
class BatchResult(Generic[R]):
    output: R  # what `predict` returned for this image
    queue_seconds: float
    inference_seconds: float
    batch_size: int


@dataclass
class _Job(Generic[R]):
    image: np.ndarray
    future: asyncio.Future[BatchResult[R]]
    enqueued_at: float


class DynamicBatcher(Generic[R]):
    """`predict` takes a stacked batch [N, ...] and returns N results, one per image, in order."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], Sequence[R]],
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        metrics: BatcherMetrics | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_wait_s < 0:
            raise ValueError("batch size and queue size must be positive, max wait not negative")
        self._predict = predict
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue_size = max_queue_size
        self._metrics = metrics
        self._pending: collections.deque[_Job[R]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._in_flight: list[_Job[R]] = []
        self._announced = 0
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._model_lock = threading.Lock()
        # True while `try_alone` has the model: queued images wait for it instead of for the lock.
        self._alone_running = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done() and not self._closed

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def announced(self) -> int:
        """Images declared on their way and not yet submitted."""
        return self._announced

    async def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("batcher already started")
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catdog-inference")
        self._worker = asyncio.create_task(self._run(), name="catdog-batcher")

    async def close(self) -> None:
        """Stop taking work, fail whatever still waits, and stop the worker."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for job in [*self._in_flight, *self._pending]:
            if not job.future.done():
                job.future.set_exception(BatcherClosedError("the service is shutting down"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._set_depth_metric()

    @contextlib.contextmanager
    def announce(self, count: int = 1) -> Iterator[None]:
        """Declare `count` images on their way (being decoded) for the duration of the block.

        Leave the block right before submitting them: with no await in between, the worker never
        sees them neither announced nor queued.
        """
        self._announced += count
        try:
            yield
        finally:
            self._announced -= count
            self._wakeup.set()  # a partial batch waiting for these should look again

    async def submit(self, image: np.ndarray) -> BatchResult[R]:
        return (await self.submit_many([image]))[0]

    async def submit_many(self, images: Sequence[np.ndarray]) -> list[BatchResult[R]]:
        """Queue all images or none: a batch request is never half accepted."""
        if self._closed or self._worker is None:
            raise BatcherClosedError("the service is not accepting work")
        if len(self._pending) + len(images) > self._max_queue_size:
            if self._metrics is not None:
                self._metrics.images_rejected(len(images))
            raise QueueFullError(
                f"{len(self._pending)} images are waiting (limit {self._max_queue_size}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        jobs: list[_Job[R]] = [_Job(image, loop.create_future(), loop.time()) for image in images]
        self._pending.extend(jobs)
        self._set_depth_metric()
        self._wakeup.set()
        return list(await asyncio.gather(*(job.future for job in jobs)))

    def try_alone(self, image: np.ndarray, own_announced: int = 1) -> BatchResult[R] | None:
        """Run the model on `image` in the calling thread if the batcher is idle, else None.

        Idle: running, nothing queued or in the model, and no image announced beyond the caller's
        own `own_announced`. Called from a worker thread: the state read here may change as it is
        read, which only decides which way the image goes; the model lock keeps the calls apart.
        Raises InferenceError as a batch would.
        """
        if self._loop is None or not self.running or self._pending or self._in_flight:
            return None
        if self._announced > own_announced or not self._model_lock.acquire(blocking=False):
            return None
        self._alone_running = True
        try:
            started = time.perf_counter()
            try:
                outputs = self._predict_checked(image[None])
            except Exception as exc:
                logger.exception("model call failed", extra={"batch_size": 1})
                raise InferenceError(f"the model call failed: {exc}") from exc
            inference_seconds = time.perf_counter() - started
        finally:
            self._alone_running = False
            self._model_lock.release()
            # Images queued meanwhile wait for this call (_next_batch): wake the batcher for them.
            # Checked after clearing the flag, so an image queued later finds it clear. No wake-up
            # otherwise: every one costs the event loop a turn and the CPU a context switch.
            if self._pending:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                    self._loop.call_soon_threadsafe(self._wakeup.set)
        if self._metrics is not None:
            self._metrics.batch_done(1, inference_seconds, [0.0])
        return BatchResult(outputs[0], 0.0, inference_seconds, 1)

    def _predict_checked(self, batch: np.ndarray) -> Sequence[R]:
        """The model's results for `batch`, one per image (anything else is a model bug)."""
        outputs = self._predict(batch)
        if len(outputs) != len(batch):
            raise RuntimeError(f"predict returned {len(outputs)} results for a batch of {len(batch)}")
        return outputs

    def _predict_locked(self, batch: np.ndarray) -> Sequence[R]:
        with self._model_lock:
            return self._predict_checked(batch)

    async def _run(self) -> None:
        while True:
            jobs = await self._next_batch()
            if jobs:
                await self._execute(jobs)

    async def _next_batch(self) -> list[_Job[R]]:
        loop = asyncio.get_running_loop()
        while not self._pending or self._alone_running:
            self._wakeup.clear()
            await self._wakeup.wait()
        # Wait for announced images to join, but never longer than max_wait after the oldest arrived.
        deadline = self._pending[0].enqueued_at + self._max_wait_s
        while len(self._pending) < self._max_batch_size and self._announced > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        count = min(self._max_batch_size, len(self._pending))
        jobs = [self._pending.popleft() for _ in range(count)]
        self._set_depth_metric()
        # A client that went away has had its future cancelled; don't spend model time on it.
        return [job for job in jobs if not job.future.done()]

    async def _execute(self, jobs: list[_Job[R]]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        batch = np.stack([job.image for job in jobs])
        self._in_flight = jobs
        try:
            outputs = await loop.run_in_executor(self._executor, self._predict_locked, batch)
        except Exception as exc:
            logger.exception("model call failed", extra={"batch_size": len(jobs)})
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(InferenceError(f"the model call failed: {exc}"))
            self._in_flight = []
            return
        # Not cleared on cancellation: close() fails the jobs of a batch it interrupted.
        self._in_flight = []
        inference_seconds = loop.time() - started
        queue_seconds = [started - job.enqueued_at for job in jobs]
        if self._metrics is not None:
            self._metrics.batch_done(len(jobs), inference_seconds, queue_seconds)
        for job, output, waited in zip(jobs, outputs, queue_seconds, strict=True):
            if not job.future.done():
                job.future.set_result(BatchResult(output, waited, inference_seconds, len(jobs)))

    def _set_depth_metric(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth_changed(len(self._pending))
