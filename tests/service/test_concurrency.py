"""Concurrent HTTP requests are grouped into shared model calls, and overload is refused with 503."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient

from app.batching import DynamicBatcher
from app.main import create_app
from app.model import ImageScores
from app.settings import Settings
from tests.images import red_png
from tests.servers import uvicorn_in_thread


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_concurrent_requests_are_batched_over_real_http(tiny_model_dir: Path) -> None:
    settings = Settings(model_dir=tiny_model_dir, auto_train=False, max_batch_size=16, max_wait_ms=100)
    requests = 32
    image = red_png()

    async def fire(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post("/predict", files={"file": ("x.png", image, "image/png")})
                    for _ in range(requests)
                )
            )

    with uvicorn_in_thread(create_app(settings)) as base_url:
        responses = asyncio.run(fire(base_url))
        metrics = httpx.get(f"{base_url}/metrics").text

    assert [r.status_code for r in responses] == [200] * requests
    batch_sizes = [r.json()["timing"]["batch_size"] for r in responses]
    model_calls = metric(metrics, "catdog_batch_size_count")
    images = metric(metrics, "catdog_batch_size_sum")
    assert images == requests
    # Without batching there would be one model call per request.
    assert model_calls <= requests / 4, f"{model_calls} model calls for {requests} concurrent requests"
    assert max(batch_sizes) > 1
    assert max(batch_sizes) <= 16


def test_overload_answers_503_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_batch_size=1, max_queue_size=1, max_batch_files=1, retry_after_seconds=3)
    state = client.app.state.service  # type: ignore[attr-defined]
    gate = threading.Event()
    entered = threading.Event()

    def slow_model(batch: np.ndarray) -> list[ImageScores]:
        entered.set()
        gate.wait(timeout=30)
        return [ImageScores(np.array([0.9, 0.1]), None) for _ in batch]

    # Swap in a batcher whose model blocks, started on the app's own event loop.
    blocked = DynamicBatcher(
        slow_model, max_batch_size=1, max_wait_s=0.0, max_queue_size=1, metrics=state.metrics
    )
    client.portal.call(blocked.start)  # type: ignore[union-attr]
    live = state.versions.default
    original, live.batcher = live.batcher, blocked

    def post() -> httpx.Response:
        return client.post("/predict", files={"file": ("x.png", red_png(), "image/png")})

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            in_model = pool.submit(post)
            assert entered.wait(timeout=30)
            queued = pool.submit(post)
            deadline = time.monotonic() + 30
            while blocked.queue_depth < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert blocked.queue_depth == 1, "the second request never reached the queue"
            refused = post()
            gate.set()
            assert in_model.result().status_code == 200
            assert queued.result().status_code == 200
    finally:
        gate.set()
        client.portal.call(blocked.close)  # type: ignore[union-attr]
        live.batcher = original

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["retry-after"] == "3"
    assert metric(client.get("/metrics").text, "catdog_queue_rejected_total") == 1.0
