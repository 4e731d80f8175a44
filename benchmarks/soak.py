"""Soak the service on loopback: a bounded number of requests at a fixed concurrency, then the figures.

    .venv/bin/python -m benchmarks.soak --requests 10000 --concurrency 32
    .venv/bin/python -m benchmarks.soak --requests 2000 --concurrency 256
    .venv/bin/python -m benchmarks.soak --scenario png16 --requests 8 --concurrency 8

Starts `python -m app serve` on a free loopback port (the committed model unless --model-dir; any
CATDOG_* variables in the environment apply), or uses --url (loopback only). Prints answers by
status, latency percentiles of all answers, of the 200s and of the 503s, throughput, and the server's
RSS before, at its peak and after (sampled every 20 ms; needs psutil, and the server's pid, which it
knows when it started the server itself). For a server it started, also the server-side durations
of the 200s and 503s from its access log (from the request reaching the app to its answer), which
leave out the client's and the kernel's queueing on a loaded machine. Bounded by --requests and --max-seconds.

Scenarios: `photos` sends real validation photos (or generated images without the data set);
`png16` sends a 6320x6320 16-bit grayscale PNG (about 90 KB, 80 MB decoded): memory amplification.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

from benchmarks.common import REPO_ROOT, sample_photos, start_service

MiB = 1024 * 1024


def png16(size: int = 6320) -> bytes:
    """A 16-bit grayscale PNG of size x size: a gradient band, tiny compressed, size*size*2 decoded."""
    image = Image.new("I;16", (size, size), 0)
    image.paste(40000, (0, 0, size // 2, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class RssSampler:
    """Samples a process's RSS in a thread: before (at start), peak, after (at stop)."""

    def __init__(self, pid: int | None, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.before = self.peak = self.after = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        import psutil

        assert self.pid is not None
        return int(psutil.Process(self.pid).memory_info().rss)

    def start(self) -> None:
        if self.pid is None:
            return
        self.before = self.peak = self._rss()

        def run() -> None:
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, self._rss())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self.after = self._rss()
        self.peak = max(self.peak, self.after)


async def soak(
    base_url: str, bodies: list[tuple[str, bytes]], requests: int, concurrency: int, max_seconds: float
) -> tuple[list[tuple[str, float]], float]:
    """(status or error name, seconds) per request sent, and the elapsed wall time."""
    results: list[tuple[str, float]] = []
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:

        async def worker() -> None:
            for index in counter:
                if time.monotonic() > deadline:
                    return
                content_type, body = bodies[index % len(bodies)]
                started = time.perf_counter()
                try:
                    response = await client.post(
                        "/predict", content=body, headers={"Content-Type": content_type}
                    )
                    outcome = str(response.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                results.append((outcome, time.perf_counter() - started))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - started


def server_side(log_path: Path) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Durations (s) of POST /predict by status from the server's access lines (from the moment the
    request reached the app to its answer: no client or kernel queueing), and its `model loaded` line."""
    durations: dict[str, list[float]] = collections.defaultdict(list)
    loaded: dict[str, object] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "catdog.access" and record.get("path") == "/predict":
            durations[str(record.get("status"))].append(float(record.get("duration_ms", 0)) / 1000)
        elif record.get("message") == "model loaded":
            loaded = {key: value for key, value in record.items() if key not in ("time", "level", "logger")}
    return durations, loaded


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ms = np.asarray(values) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return f"p50 {p50:.0f} ms  p95 {p95:.0f} ms  p99 {p99:.0f} ms  max {ms.max():.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running service on loopback (default: start one)")
    parser.add_argument("--pid", type=int, help="the --url server's pid, for its RSS")
    parser.add_argument("--model-dir", type=Path, help="model for the server this starts")
    parser.add_argument(
        "--data-dir", type=Path, default=REPO_ROOT.parent / "shared/data/cats_and_dogs_filtered"
    )
    parser.add_argument("--scenario", choices=("photos", "png16"), default="photos")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop sending after this long")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    if args.scenario == "png16":
        bodies = [("image/png", png16())]
    else:
        bodies = [("image/jpeg", photo) for photo in sample_photos(args.data_dir, limit=64)]

    process = None
    log_path = Path(tempfile.mkstemp(prefix="catdog-soak-", suffix=".log")[1])
    if args.url:
        if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error("--url must be a loopback address")
        base_url, pid = args.url.rstrip("/"), args.pid
    else:
        # INFO: the access lines give the server-side durations.
        process, base_url = start_service(
            args.model_dir, log_level="INFO", stdout=subprocess.DEVNULL, stderr=log_path.open("wb")
        )
        pid = process.pid
    try:
        # One request first: the figures start from a warm server.
        httpx.post(
            f"{base_url}/predict", content=bodies[0][1], headers={"Content-Type": bodies[0][0]}, timeout=60
        )
        sampler = RssSampler(pid)
        sampler.start()
        results, elapsed = asyncio.run(
            soak(base_url, bodies, args.requests, args.concurrency, args.max_seconds)
        )
        time.sleep(1.0)  # let the server settle before the "after" RSS
        sampler.stop()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)

    server, loaded = server_side(log_path) if process is not None else ({}, {})
    log_path.unlink(missing_ok=True)
    by_status = collections.Counter(outcome for outcome, _ in results)
    ok = [seconds for outcome, seconds in results if outcome == "200"]
    shed = [seconds for outcome, seconds in results if outcome == "503"]
    figures = {
        "scenario": args.scenario,
        "requests": len(results),
        "concurrency": args.concurrency,
        "elapsed_s": round(elapsed, 1),
        "answers_per_s": round(len(results) / elapsed, 1),
        "by_status": dict(sorted(by_status.items())),
        "errors": sum(count for outcome, count in by_status.items() if outcome not in ("200", "503")),
        "all": percentiles([seconds for _, seconds in results]),
        "200": percentiles(ok),
        "503": percentiles(shed),
        "mean_200_ms": round(statistics.fmean(ok) * 1000, 1) if ok else None,
        "server_200": percentiles(server.get("200", [])),
        "server_503": percentiles(server.get("503", [])),
        "model_loaded": loaded,
        "rss_before_mb": round(sampler.before / MiB, 1),
        "rss_peak_mb": round(sampler.peak / MiB, 1),
        "rss_after_mb": round(sampler.after / MiB, 1),
        "rss_peak_growth_mb": round((sampler.peak - sampler.before) / MiB, 1),
        "rss_after_growth_mb": round((sampler.after - sampler.before) / MiB, 1),
    }
    for key, value in figures.items():
        print(f"{key:>20}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
