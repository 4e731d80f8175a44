"""catdog.client against a live server: typed answers, errors as exceptions, 503 retried after Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from catdog.client import (
    AsyncClient,
    BatchResult,
    CatdogError,
    Client,
    PredictionResult,
    ServiceUnavailableError,
    retry_after_seconds,
)
from tests.conftest import real_photos
from tests.images import blue_jpeg, red_png, truncated_jpeg
from tests.servers import uvicorn_in_thread


@pytest.fixture(scope="module")
def served(tiny_pet_model_dir: Path) -> Iterator[tuple[FastAPI, str]]:
    app = create_app(Settings(model_dir=tiny_pet_model_dir, auto_train=False, retry_after_seconds=1))
    with uvicorn_in_thread(app) as base_url:
        yield app, base_url


@pytest.fixture
def base_url(served: tuple[FastAPI, str]) -> str:
    return served[1]


def test_predict_returns_typed_answers(base_url: str, tmp_path: Path) -> None:
    photo = tmp_path / "blue.jpg"
    photo.write_bytes(blue_jpeg())
    with Client(base_url) as client:
        ready = client.ready()
        by_bytes = client.predict(red_png())
        by_path = client.predict(photo)
        batch = client.predict_batch([red_png(), photo])
        metadata = client.metadata()
        assert client.live()
    assert ready.status == "ready" and ready.model_version == "tiny-pet-1"
    assert isinstance(by_bytes, PredictionResult)
    assert by_bytes.label == "cat" and by_bytes.probabilities["cat"] > 0.9
    assert by_bytes.is_cat_or_dog is True and by_bytes.pet_score is not None
    assert by_bytes.timing is not None and by_bytes.timing.batch_size >= 1
    assert by_path.label == "dog"
    assert isinstance(batch, BatchResult)
    assert [(item.index, item.label) for item in batch.predictions] == [(0, "cat"), (1, "dog")]
    assert batch.predictions[1].filename == "blue.jpg"
    assert metadata["class_names"] == ["cat", "dog"]


def test_errors_raise_with_the_service_code_and_request_id(base_url: str) -> None:
    with Client(base_url) as client, pytest.raises(CatdogError) as caught:
        client.predict(truncated_jpeg(), filename="broken.jpg")
    error = caught.value
    assert error.status_code == 400
    assert error.code == "undecodable_image"
    assert "'broken.jpg'" in error.message
    assert error.request_id


def test_unreachable_service_is_a_catdog_error() -> None:
    from tests.servers import free_port

    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        assert not client.live()
        with pytest.raises(CatdogError) as caught:
            client.predict(red_png())
    assert caught.value.code == "unreachable" and caught.value.status_code == 0


def not_ready_for(app: FastAPI, seconds: float) -> None:
    """Make the real service answer 503 not_ready (Retry-After: 1) for `seconds`, then recover."""
    state = app.state.service
    versions = state.versions
    state.versions = None
    threading.Timer(seconds, lambda: setattr(state, "versions", versions)).start()


def test_a_503_is_retried_after_retry_after(served: tuple[FastAPI, str]) -> None:
    app, base_url = served
    not_ready_for(app, 1.5)
    started = time.monotonic()
    with Client(base_url, retries=5) as client:
        answer = client.predict(red_png())
    elapsed = time.monotonic() - started
    assert answer.label == "cat"
    # 503 at 0 s and ~1 s (each waiting the 1 s Retry-After), then the answer at ~2 s.
    assert elapsed >= 1.9, f"answered after {elapsed:.2f} s: Retry-After was not honoured"


def test_retries_run_out(served: tuple[FastAPI, str]) -> None:
    app, base_url = served
    not_ready_for(app, 3.0)
    started = time.monotonic()
    with Client(base_url, retries=1) as client, pytest.raises(ServiceUnavailableError) as caught:
        client.predict(red_png())
    assert 0.9 <= time.monotonic() - started < 2.5
    assert caught.value.status_code == 503 and caught.value.code == "not_ready"
    # max_retry_wait caps a long Retry-After: 3 quick retries, then give up.
    started = time.monotonic()
    with Client(base_url, retries=3, max_retry_wait=0.05) as client, pytest.raises(ServiceUnavailableError):
        client.predict(red_png())
    assert time.monotonic() - started < 1.0
    time.sleep(3.0)  # let the service recover for the next tests


def test_async_client(base_url: str) -> None:
    async def run() -> list[str]:
        async with AsyncClient(base_url) as client:
            ready = await client.ready()
            assert ready.status == "ready"
            answers = await asyncio.gather(*(client.predict(image) for image in (red_png(), blue_jpeg()) * 4))
            batch = await client.predict_batch([blue_jpeg()])
            assert (await client.metadata())["version"] == "tiny-pet-1"
            with pytest.raises(CatdogError) as caught:
                await client.predict(b"")
            assert caught.value.code == "empty_image"
            return [answer.label for answer in answers] + [batch.predictions[0].label]

    assert asyncio.run(run()) == ["cat", "dog"] * 4 + ["dog"]


def test_async_client_retries_a_503(served: tuple[FastAPI, str]) -> None:
    app, base_url = served
    not_ready_for(app, 0.5)

    async def run() -> str:
        async with AsyncClient(base_url) as client:
            return (await client.predict(red_png())).label

    started = time.monotonic()
    assert asyncio.run(run()) == "cat"
    assert time.monotonic() - started >= 0.9


def test_real_photos(default_server: str) -> None:
    photos = real_photos(per_class=2)
    with Client(default_server) as client:
        answers = [client.predict(path) for path, _ in photos]
    assert [answer.label for answer in answers] == [label for _, label in photos]
    assert all(answer.is_cat_or_dog for answer in answers)


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) == 1.0
    assert retry_after_seconds("soon", default=2.0) == 2.0
    later = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 27 <= retry_after_seconds(later) <= 30
    past = email.utils.format_datetime(datetime.now(timezone.utc) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(past) == 0.0
