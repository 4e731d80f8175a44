"""Decoding images into model input: a component of its own, with its threads and its memory budget.

Every front's encoded images come here (app/service.py calls it): the header first (format, pixel
limit after JPEG draft scaling, decode cost in bytes), then the pixels, holding that many bytes of
the shared `DecodeBudget` while they are decoded. A bad image is a 400 or 413 naming it.

One hop to a worker thread in the common case: header, budget, pixels, and an optional `then` run
on the pixels in the same thread (a lone request's model call: DynamicBatcher.try_alone). Only
when the budget is spent does an image wait on the event loop for its bytes, and go back to a
thread to be decoded. The threads are a plain executor, not Starlette's anyio thread pool, whose
hop costs several times more on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry, Gauge

from app.errors import InvalidImageError, TooLargeError
from catdog.cpus import process_cpus
from catdog.imaging import (
    EmptyImageError,
    ImageDecodeError,
    ImageOverBudgetError,
    ImageTooLargeError,
    check_decode_budget,
    model_input_from_image,
    probe_image,
)

T = TypeVar("T")


class DecodeBudget:
    """A byte-weighted semaphore: `async with budget.hold(n)` waits until n bytes are free.

    A worker thread that has just read an image's header may also `try_take(n)` without waiting
    (the one-hop decode in app/service.py); the bytes it got go back with `release_from_thread`.
    A lock guards the count because of those threads; waiters are only ever woken on the event
    loop, where their futures live.
    """

    def __init__(self, capacity: int, registry: CollectorRegistry | None = None) -> None:
        if capacity < 1:
            raise ValueError("the decode budget must be positive")
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._gauge = (
            Gauge(
                "catdog_decode_bytes_in_use",
                "Estimated bytes of the images being decoded now (CATDOG_DECODE_MEMORY_BYTES bounds it).",
                registry=registry,
            )
            if registry is not None
            else None
        )

    def clamp(self, nbytes: int) -> int:
        """What holding `nbytes` takes: at least 1 byte, at most the whole budget."""
        return min(max(nbytes, 1), self.capacity)

    def try_take(self, nbytes: int) -> bool:
        """Take `clamp(nbytes)` now if that needs no wait (nobody queued, enough free); any thread."""
        nbytes = self.clamp(nbytes)
        with self._lock:
            if not self._free_for(nbytes):
                return False
            self._add(nbytes)
            return True

    def release_from_thread(self, nbytes: int, loop: asyncio.AbstractEventLoop) -> None:
        """Give back what `try_take(nbytes)` took, from the worker thread. The event loop is woken
        only when someone waits for bytes: a lone request's model call, which comes next in that
        thread, then runs with nothing else on the CPU."""
        nbytes = self.clamp(nbytes)
        with self._lock:
            if not self._waiters:
                self._add(-nbytes)
                return
        loop.call_soon_threadsafe(self._release, nbytes)

    @contextlib.asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        nbytes = self.clamp(nbytes)
        with self._lock:
            granted = self._free_for(nbytes)
            if granted:
                self._add(nbytes)
            else:
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                entry = (nbytes, future)
                self._waiters.append(entry)
        if not granted:
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled():
                    self._release(nbytes)  # granted just as we were cancelled: give it back
                else:
                    with self._lock, contextlib.suppress(ValueError):
                        self._waiters.remove(entry)
                    self._wake()
                raise
        try:
            yield
        finally:
            self._release(nbytes)

    def _free_for(self, nbytes: int) -> bool:  # with the lock held
        """Nobody queued ahead, and room for `nbytes` now."""
        return not self._waiters and self.used + nbytes <= self.capacity

    def _add(self, nbytes: int) -> None:  # with the lock held; negative gives bytes back
        self.used += nbytes
        if self._gauge is not None:
            self._gauge.set(self.used)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._add(-nbytes)
        self._wake()

    def _wake(self) -> None:
        # First come, first served: a large decode at the head is not overtaken by small ones.
        with self._lock:
            while self._waiters:
                nbytes, future = self._waiters[0]
                if future.done():
                    self._waiters.popleft()
                    continue
                if self.used + nbytes > self.capacity:
                    return
                self._waiters.popleft()
                self._add(nbytes)
                future.set_result(None)


@dataclass(frozen=True)
class Decoded(Generic[T]):
    pixels: np.ndarray  # uint8 [size, size, 3]
    at: float  # time.perf_counter() when decoding ended
    then: T | None = None  # what `then` returned, when it ran in the decoding thread


class Decoder:
    """Encoded images -> uint8 [size, size, 3] model input, within the pixel limit and the budget."""

    def __init__(
        self, max_image_pixels: int, budget_bytes: int, registry: CollectorRegistry | None = None
    ) -> None:
        self.max_image_pixels = max_image_pixels
        self.budget = DecodeBudget(budget_bytes, registry)
        # ThreadPoolExecutor's default size, min(32, CPUs + 4), but counting the CPUs of the
        # container's quota, not the node's: decoding is CPU work, and the budget bounds its memory.
        self.threads = min(32, process_cpus().count + 4)
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="catdog-decode")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @property
    def running(self) -> bool:
        return self._pool is not None

    async def decode(
        self,
        data: bytes,
        size: int,
        name: str | None,
        then: Callable[[np.ndarray], T | None] | None = None,
    ) -> Decoded[T]:
        """Decode off the event loop within the budget; `then(pixels)` runs in the same thread.

        APIError 400 or 413 naming the image (`name`: a filename, or None) when it cannot be used.
        """
        shown = f"'{name}'" if name else "the image"
        loop = asyncio.get_running_loop()
        try:
            in_thread: Callable[[], Decoded[T] | tuple[Image.Image, int]] = functools.partial(
                self._decode_in_thread, data, size, then, loop
            )
            first = await loop.run_in_executor(self._executor(), in_thread)
            if isinstance(first, Decoded):
                return first
            image, cost = first
            async with self.budget.hold(cost):
                pixels = await loop.run_in_executor(self._executor(), model_input_from_image, image, size)
            return Decoded(pixels, time.perf_counter())
        except ImageOverBudgetError as exc:
            raise TooLargeError(
                "image_too_large", f"{shown}: {exc}", {"decode_memory_bytes": exc.budget_bytes}
            ) from exc
        except ImageTooLargeError as exc:
            raise TooLargeError(
                "image_too_large", f"{shown}: {exc}", {"max_image_pixels": exc.max_pixels}
            ) from exc
        except EmptyImageError as exc:
            raise InvalidImageError("empty_image", f"{shown}: {exc}") from exc
        except ImageDecodeError as exc:
            raise InvalidImageError("undecodable_image", f"{shown}: {exc}") from exc

    async def squash(self, images: list[np.ndarray], size: int) -> list[np.ndarray]:
        """Pixels a client decoded itself, resized to the model's input as decoding does."""

        def resize(pixels: np.ndarray) -> np.ndarray:
            resized = Image.fromarray(pixels, "RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(resized, dtype=np.uint8)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), lambda: [resize(image) for image in images])

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise RuntimeError("the decoder is not started")
        return self._pool

    def _decode_in_thread(
        self,
        data: bytes,
        size: int,
        then: Callable[[np.ndarray], T | None] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> Decoded[T] | tuple[Image.Image, int]:
        """In a worker thread: the decoded image, or (header, cost) when the budget must be waited for."""
        # Header only: cheap, and nothing is allocated for the pixels yet.
        image = probe_image(data, self.max_image_pixels, (size, size))
        cost = check_decode_budget(image, self.budget.capacity)
        if not self.budget.try_take(cost):
            return image, cost
        try:
            pixels = model_input_from_image(image, size)
        finally:
            self.budget.release_from_thread(cost, loop)
        decoded = time.perf_counter()
        return Decoded(pixels, decoded, None if then is None else then(pixels))
