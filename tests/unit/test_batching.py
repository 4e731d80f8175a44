"""DynamicBatcher on its own, with a fake model that records the batches it is given."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from app.batching import BatcherClosedError, DynamicBatcher, InferenceError, QueueFullError


class RecordingModel:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batch_sizes: list[int] = []
        self.delay = delay
        self.fail = fail
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: np.ndarray) -> list[int]:
        self.release.wait(timeout=10)
        self.batch_sizes.append(len(batch))
        if self.fail:
            raise RuntimeError("boom")
        time.sleep(self.delay)
        # Echo each image's first pixel back so tests can check results reach the right caller.
        return [int(value) for value in batch[:, 0, 0, 0]]


def image(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, dtype=np.uint8)


class RecordingMetrics:
    """A BatcherMetrics that keeps what it is told."""

    def __init__(self) -> None:
        self.rejected = 0
        self.depths: list[int] = []
        self.batches: list[tuple[int, float, list[float]]] = []

    def images_rejected(self, count: int) -> None:
        self.rejected += count

    def queue_depth_changed(self, depth: int) -> None:
        self.depths.append(depth)

    def batch_done(self, batch_size: int, inference_seconds: float, queue_seconds: Sequence[float]) -> None:
        self.batches.append((batch_size, inference_seconds, list(queue_seconds)))


async def started(
    model: Callable[[np.ndarray], Sequence[Any]], metrics: RecordingMetrics | None = None, **kwargs: float
) -> DynamicBatcher[Any]:
    options = {"max_batch_size": 8, "max_wait_s": 0.2, "max_queue_size": 64, **kwargs}
    batcher: DynamicBatcher[Any] = DynamicBatcher(
        model,
        max_batch_size=int(options["max_batch_size"]),
        max_wait_s=options["max_wait_s"],
        max_queue_size=int(options["max_queue_size"]),
        metrics=metrics,
    )
    await batcher.start()
    return batcher


def test_concurrent_submissions_share_one_model_call() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=8, max_wait_s=0.5)
        results = await asyncio.gather(*(batcher.submit(image(v)) for v in range(8)))
        await batcher.close()
        assert model.batch_sizes == [8]
        # Each caller gets the result for its own image back.
        assert [r.output for r in results] == list(range(8))
        assert all(r.batch_size == 8 for r in results)

    asyncio.run(scenario())


def test_full_batch_does_not_wait_for_the_deadline() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=4, max_wait_s=5.0)
        began = time.perf_counter()
        await asyncio.gather(*(batcher.submit(image(1)) for _ in range(4)))
        elapsed = time.perf_counter() - began
        await batcher.close()
        assert model.batch_sizes == [4]
        assert elapsed < 2.0, "a full batch must run at once, not after max_wait"

    asyncio.run(scenario())


def test_batches_never_exceed_max_batch_size() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=3, max_wait_s=0.05)
        await asyncio.gather(*(batcher.submit(image(1)) for _ in range(10)))
        await batcher.close()
        assert sum(model.batch_sizes) == 10
        assert max(model.batch_sizes) == 3

    asyncio.run(scenario())


def test_lone_request_is_not_delayed() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=8, max_wait_s=5.0)
        began = time.perf_counter()
        result = await batcher.submit(image(5))
        elapsed = time.perf_counter() - began
        await batcher.close()
        assert model.batch_sizes == [1]
        assert elapsed < 1.0, "nothing else announced: no reason to wait max_wait"
        assert result.queue_seconds < 1.0

    asyncio.run(scenario())


def test_announced_image_joins_the_waiting_batch() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=8, max_wait_s=5.0)
        with batcher.announce():
            first = asyncio.ensure_future(batcher.submit(image(1)))
            await asyncio.sleep(0.2)  # "decoding" the second image
            assert model.batch_sizes == [], "the first image waits for the announced one"
        second = await batcher.submit(image(2))
        await first
        await batcher.close()
        assert model.batch_sizes == [2]
        assert second.batch_size == 2

    asyncio.run(scenario())


def test_announced_image_is_waited_for_at_most_max_wait() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=8, max_wait_s=0.3)
        with batcher.announce():  # never submitted while the first one waits
            began = time.perf_counter()
            result = await batcher.submit(image(1))
            elapsed = time.perf_counter() - began
        await batcher.close()
        assert model.batch_sizes == [1]
        assert 0.25 <= elapsed < 2.0
        assert result.queue_seconds >= 0.25

    asyncio.run(scenario())


def test_withdrawn_announcement_releases_the_batch() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=8, max_wait_s=5.0)
        began = time.perf_counter()
        with batcher.announce():  # e.g. an upload that turns out undecodable: never submitted
            waiting = asyncio.ensure_future(batcher.submit(image(1)))
            await asyncio.sleep(0.1)
        await waiting
        elapsed = time.perf_counter() - began
        await batcher.close()
        assert model.batch_sizes == [1]
        assert elapsed < 1.0

    asyncio.run(scenario())


def test_requests_arriving_during_inference_form_the_next_batch() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.release.clear()  # hold the first model call
        batcher = await started(model, max_batch_size=8, max_wait_s=0.0)
        first = asyncio.ensure_future(batcher.submit(image(1)))
        await asyncio.sleep(0.1)
        rest = [asyncio.ensure_future(batcher.submit(image(2))) for _ in range(5)]
        await asyncio.sleep(0.1)
        model.release.set()
        await asyncio.gather(first, *rest)
        await batcher.close()
        assert model.batch_sizes == [1, 5]

    asyncio.run(scenario())


def test_full_queue_refuses_at_once() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.release.clear()
        batcher = await started(model, max_batch_size=2, max_wait_s=0.0, max_queue_size=4)
        in_flight = [asyncio.ensure_future(batcher.submit(image(1))) for _ in range(2)]
        await asyncio.sleep(0.1)  # those two are now inside the (blocked) model call
        queued = [asyncio.ensure_future(batcher.submit(image(1))) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert batcher.queue_depth == 4
        with pytest.raises(QueueFullError):
            await batcher.submit(image(1))
        # All-or-nothing for several images at once.
        with pytest.raises(QueueFullError):
            await batcher.submit_many([image(1), image(1)])
        model.release.set()
        await asyncio.gather(*in_flight, *queued)
        await batcher.close()
        assert sum(model.batch_sizes) == 6

    asyncio.run(scenario())


def test_model_failure_reaches_every_caller_and_batcher_survives() -> None:
    async def scenario() -> None:
        model = RecordingModel(fail=True)
        batcher = await started(model, max_wait_s=0.05)
        outcomes = await asyncio.gather(*(batcher.submit(image(1)) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(o, InferenceError) for o in outcomes)
        model.fail = False
        assert (await batcher.submit(image(1))).batch_size == 1
        await batcher.close()

    asyncio.run(scenario())


def test_cancelled_request_is_not_sent_to_the_model() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = await started(model, max_batch_size=8, max_wait_s=0.3)
        with batcher.announce():  # keeps the batch open while one caller gives up
            gone = asyncio.ensure_future(batcher.submit(image(1)))
            kept = asyncio.ensure_future(batcher.submit(image(2)))
            await asyncio.sleep(0.05)
            gone.cancel()
            await kept
        await batcher.close()
        assert model.batch_sizes == [1]

    asyncio.run(scenario())


def test_close_fails_waiting_requests_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.release.clear()
        batcher = await started(model, max_batch_size=1, max_wait_s=0.0)
        waiting = [asyncio.ensure_future(batcher.submit(image(1))) for _ in range(3)]
        await asyncio.sleep(0.1)
        model.release.set()
        await batcher.close()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert any(isinstance(o, BatcherClosedError) for o in outcomes)
        assert not batcher.running
        with pytest.raises(BatcherClosedError):
            await batcher.submit(image(1))

    asyncio.run(scenario())


@dataclass(frozen=True)
class Answer:
    value: int
    note: str | None


def test_results_of_any_type_reach_their_own_caller() -> None:
    # The service batches ImageScores (probabilities and pet_score); the batcher only hands them out.
    def model(batch: np.ndarray) -> list[Answer]:
        return [Answer(int(v), "odd" if v % 2 else None) for v in batch[:, 0, 0, 0]]

    async def scenario() -> None:
        batcher = await started(model, max_batch_size=8, max_wait_s=0.5)
        results = await batcher.submit_many([image(v) for v in range(5)])
        await batcher.close()
        assert [r.output for r in results] == [Answer(v, "odd" if v % 2 else None) for v in range(5)]

    asyncio.run(scenario())


def test_wrong_number_of_results_fails_the_batch() -> None:
    def short(batch: np.ndarray) -> list[int]:
        return [0] * (len(batch) - 1)

    async def scenario() -> None:
        batcher = await started(short, max_batch_size=4, max_wait_s=0.5)
        outcomes = await asyncio.gather(*(batcher.submit(image(1)) for _ in range(4)), return_exceptions=True)
        await batcher.close()
        assert all(isinstance(o, InferenceError) for o in outcomes), outcomes
        assert "3 results for a batch of 4" in str(outcomes[0])

    asyncio.run(scenario())


def test_metrics_callbacks_report_batches_depth_and_rejections() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        metrics = RecordingMetrics()
        batcher = await started(model, metrics, max_batch_size=4, max_wait_s=0.5, max_queue_size=4)
        await asyncio.gather(*(batcher.submit(image(1)) for _ in range(4)))
        with pytest.raises(QueueFullError):
            await batcher.submit_many([image(1)] * 5)
        await batcher.close()
        assert metrics.rejected == 5
        assert [(size, len(waits)) for size, _, waits in metrics.batches] == [(4, 4)]
        assert all(wait >= 0 for wait in metrics.batches[0][2])
        assert max(metrics.depths) == 4
        assert metrics.depths[-1] == 0

    asyncio.run(scenario())


def test_lone_image_runs_in_the_calling_thread_when_idle() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        metrics = RecordingMetrics()
        batcher = await started(model, metrics)
        threads: list[str] = []

        def in_worker() -> Any:
            threads.append(threading.current_thread().name)
            return batcher.try_alone(image(7))

        with batcher.announce():  # the caller's own image is announced while it decodes
            result = await asyncio.to_thread(in_worker)
        await batcher.close()
        assert result is not None
        assert (result.output, result.batch_size, result.queue_seconds) == (7, 1, 0.0)
        assert model.batch_sizes == [1]
        assert [size for size, _, _ in metrics.batches] == [1]
        assert not threads[0].startswith("catdog-inference")

    asyncio.run(scenario())


def test_lone_path_declines_when_others_are_queued_or_announced() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.release.clear()  # the batcher's own call holds the model
        batcher = await started(model, max_wait_s=0.0)
        in_model = asyncio.ensure_future(batcher.submit(image(1)))
        await asyncio.sleep(0.1)
        busy = await asyncio.to_thread(batcher.try_alone, image(2))
        model.release.set()
        await in_model
        with batcher.announce(2):  # another request is still decoding
            crowded = await asyncio.to_thread(batcher.try_alone, image(3))
        idle = await asyncio.to_thread(batcher.try_alone, image(4), 0)
        await batcher.close()
        closed = await asyncio.to_thread(batcher.try_alone, image(5), 0)
        assert (busy, crowded, closed) == (None, None, None)
        assert idle is not None and idle.output == 4
        assert model.batch_sizes == [1, 1]

    asyncio.run(scenario())


def test_images_queued_during_a_lone_call_wait_for_it_then_batch_together() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        model.release.clear()
        batcher = await started(model, max_wait_s=0.0)
        lone = asyncio.ensure_future(asyncio.to_thread(batcher.try_alone, image(1), 0))
        await asyncio.sleep(0.1)  # the lone call now holds the model
        queued = [asyncio.ensure_future(batcher.submit(image(2))) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert batcher.queue_depth == 3, "queued images wait in the queue, not at the model's lock"
        model.release.set()
        first = await lone
        results = await asyncio.gather(*queued)
        await batcher.close()
        assert first is not None and first.output == 1
        assert [r.output for r in results] == [2, 2, 2]
        assert model.batch_sizes == [1, 3]

    asyncio.run(scenario())


def test_lone_call_failure_is_an_inference_error() -> None:
    async def scenario() -> None:
        model = RecordingModel(fail=True)
        batcher = await started(model)
        with pytest.raises(InferenceError):
            await asyncio.to_thread(batcher.try_alone, image(1), 0)
        model.fail = False
        # The model is free again, for the lone path and the batcher alike.
        again = await asyncio.to_thread(batcher.try_alone, image(2), 0)
        batched = await batcher.submit(image(3))
        await batcher.close()
        assert again is not None and again.output == 2
        assert batched.output == 3

    asyncio.run(scenario())
