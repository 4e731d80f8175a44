"""Raw model throughput vs. service throughput at several concurrency levels, with p50/p95 latency.

    python -m benchmarks.throughput [--model-dir model/default] [--requests 200] [--concurrency 1 8 32]

(from the repo root, with the project's venv: `.venv/bin/python -m benchmarks.throughput`).

Raw: the SavedModel's signature on already-decoded batches, in this process (no HTTP, no decoding).
Service: `python -m app serve` in a subprocess, loaded over loopback by catdog.client.AsyncClient posting
real photos from the shared data set (or generated images if it is absent). The ratio says how much of
the model's batched throughput the service delivers end to end. A benchmark, not a test: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import numpy as np

from app.model import warm_up
from app.settings import Settings
from catdog.client import AsyncClient
from catdog.saved_model import load_exported_model

try:
    from benchmarks.common import sample_photos, start_service
except ModuleNotFoundError as error:  # started as `python benchmarks/throughput.py`
    raise SystemExit("run it from the repo root as: python -m benchmarks.throughput") from error


def raw_throughput(model_dir: Path, runtime: str, batch_size: int, seconds: float) -> float:
    # The same runtime the service picks (CATDOG_RUNTIME), so the ratio compares like with like.
    model = load_exported_model(model_dir, runtime)
    size = model.metadata.image_size
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    warm_up(model, (batch_size,))
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(batch)
        images += batch_size
    return images / (time.perf_counter() - started)


async def load_service(
    base_url: str, photos: list[bytes], requests: int, concurrency: int
) -> tuple[float, list[float], list[dict[str, float]]]:
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    counter = iter(range(requests))

    async def worker(client: AsyncClient) -> None:
        for index in counter:
            photo = photos[index % len(photos)]
            began = time.perf_counter()
            answer = await client.predict(photo, filename="photo.jpg")
            latencies.append(time.perf_counter() - began)
            assert answer.timing is not None
            timings.append(answer.timing.model_dump())

    # retries=0: a 503 is a failure here, not something to wait out.
    async with AsyncClient(base_url, timeout=120, retries=0, max_connections=concurrency) as client:
        # One request first, so connection set-up is not timed.
        await client.predict(photos[0], filename="photo.jpg")
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, latencies, timings


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Settings().model_dir)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--raw-seconds", type=float, default=5.0)
    args = parser.parse_args()

    settings = Settings(model_dir=args.model_dir)
    batch = settings.max_batch_size
    raw_one = raw_throughput(args.model_dir, settings.runtime, 1, args.raw_seconds)
    raw_batch = raw_throughput(args.model_dir, settings.runtime, batch, args.raw_seconds)
    print(f"model: {args.model_dir}  runtime: {settings.runtime}  cores: {os.cpu_count()}", end="  ")
    print(f"max_batch_size: {batch}  max_wait_ms: {settings.max_wait_ms}")
    print(f"raw model throughput: batch 1: {raw_one:8.1f} img/s   batch {batch}: {raw_batch:8.1f} img/s")

    server, base_url = start_service(args.model_dir, timeout=120)
    try:
        photos = sample_photos(settings.data_dir)
        print(f"\n{'concurrency':>11} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'vs raw batch':>13}", end="")
        print(f"  | server means: {'decode':>7} {'queue':>7} {'model':>7} ms {'batch':>6}")
        for concurrency in args.concurrency:
            throughput, latencies, timings = asyncio.run(
                load_service(base_url, photos, args.requests, concurrency)
            )
            mean = {key: float(np.mean([t[key] for t in timings])) for key in timings[0]}
            print(
                f"{concurrency:>11} {throughput:8.1f} {percentile(latencies, 50) * 1000:8.1f} "
                f"{percentile(latencies, 95) * 1000:8.1f} {throughput / raw_batch:12.2f}x",
                end="",
            )
            print(
                f"  |               {mean['decode_ms']:7.1f} {mean['queue_ms']:7.1f} "
                f"{mean['inference_ms']:7.1f}    {mean['batch_size']:6.1f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
