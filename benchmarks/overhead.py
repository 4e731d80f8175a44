"""Per-request overhead: what catdog adds to a lone request beyond decoding the photo and the model call.

    .venv/bin/python -m benchmarks.overhead [--requests 200] [--rounds 5] [--profile /tmp/catdog.prof]

The model is replaced by a stub that answers at once (same metadata, same outputs), so the model's
own time, tens of milliseconds with noise of several, does not drown the overhead being measured.
Two servers run side by side, each in its own process on a loopback port:

- catdog: `create_app` with every layer of the real service (request id + access log, metrics,
  body limit, admission, multipart parsing, decoding in the thread pool, the batcher's hand-off to
  the inference thread, response model);
- naive: the naive FastAPI peer (benchmarks/peers/naive_fastapi.py) with the same stub.

A client sends one request at a time (same photo, keep-alive) to each, in interleaved rounds. The
overhead is the median latency minus the median in-process decode time of that photo (the model
call costs nothing here): it is what a lone request pays over `decode + model call`.

`--profile FILE`: the catdog server runs under cProfile and writes FILE when stopped; the report
groups its time by layer (see docs/performance.md, "Where the time goes").
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from catdog.contract import PET_SCORE, PROBABILITIES, read_metadata
from catdog.imaging import load_model_input
from catdog.saved_model import ExportedModel

try:
    from benchmarks.common import free_port, sample_photos
    from benchmarks.peers.common import wait_ok
except ModuleNotFoundError as error:
    raise SystemExit("run it from the repo root as: python -m benchmarks.overhead") from error

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"


class StubRunner:
    """Answers at once: what is left of a request's latency is everything but the model."""

    runtime = "stub"
    precision = "none"

    def __call__(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        count = len(images)
        return {
            PROBABILITIES: np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (count, 1)),
            PET_SCORE: np.full(count, 0.9, dtype=np.float32),
        }


def stub_model(model_dir: Path, pet_threshold: float | None = None) -> ExportedModel:
    return ExportedModel(
        StubRunner(), read_metadata(model_dir), model_dir, configured_pet_threshold=pet_threshold
    )


def serve(kind: str, port: int, model_dir: Path, profile: str | None) -> None:
    """Child process: serve `kind` with the stub model until SIGTERM."""
    import uvicorn

    if kind.startswith("catdog"):
        from app.logs import configure_logging
        from app.main import create_app
        from app.settings import Settings

        settings = Settings(model_dir=model_dir, auto_train=False)
        configure_logging(settings.log_level)  # the JSON access log lines are part of the cost
        app: Any = create_app(settings, model=stub_model(model_dir, settings.pet_threshold))
    else:
        import benchmarks.peers.common as peer_common
        from benchmarks.peers import naive_fastapi

        peer_common.load_model = lambda: stub_model(model_dir)  # type: ignore[assignment]
        naive_fastapi.load_model = peer_common.load_model  # type: ignore[attr-defined]
        app = naive_fastapi.app
    # catdog-h11: the same app on uvicorn's pure-Python HTTP parser and asyncio's loop (what uvicorn
    # uses when httptools and uvloop are not installed), to measure what they save side by side.
    options: dict[str, Any] = {"http": "h11", "loop": "asyncio"} if kind == "catdog-h11" else {}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    profiler = cProfile.Profile() if profile else None

    def stop(*_: object) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    if profiler is not None:
        # Started by the parent after the warm-up: startup and imports stay out of the profile.
        # cProfile sees the thread that enables it: the event loop's (signal handlers run there).
        signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    server.run()
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)


def lone_requests(base_url: str, photo: bytes, count: int) -> list[float]:
    """Latencies of `count` requests sent one after another; the multipart body is built once, so
    the client's own work per request is little more than a socket write and read."""
    boundary = "catdogoverheadboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    latencies = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for _ in range(count):
            began = time.perf_counter()
            response = client.post("/predict", content=body, headers=headers)
            latencies.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise RuntimeError(f"{base_url}: HTTP {response.status_code}: {response.text[:200]}")
    return latencies


def decode_seconds(photo: bytes, size: int, count: int) -> tuple[float, float]:
    """(median wall seconds, mean CPU seconds) of decoding `photo` in this process."""
    timings = []
    cpu_started = time.process_time()
    for _ in range(count):
        began = time.perf_counter()
        load_model_input(photo, size, 40_000_000)
        timings.append(time.perf_counter() - began)
    return statistics.median(timings), (time.process_time() - cpu_started) / count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LAYERS = {
    "_thread.lock": "GIL/lock hand-offs with the worker threads",
    "_queue.SimpleQueue": "thread pool hops",
    "_io.TextIOWrapper": "access log (JSON)",
    "_socket.socket": "uvicorn (HTTP parsing, transport)",
    # substring of "file:function" -> layer; first match wins, in this order.
    "batching.py": "batcher hand-off (queue, inference thread, futures)",
    "imaging.py": "decoding (Pillow)",
    "PIL/": "decoding (Pillow)",
    "multipart": "multipart parsing",
    "uploads.py": "multipart parsing",
    "formparsers": "multipart parsing",
    "prometheus": "metrics",
    "metrics.py": "metrics",
    "logging/": "access log (JSON)",
    "pythonjsonlogger": "access log (JSON)",
    "logs.py": "access log (JSON)",
    "middleware.py": "middleware (request id, body limit)",
    "admission.py": "admission control",
    "pydantic": "response model / validation",
    "encoders.py": "response model / validation",
    "uvicorn/": "uvicorn (HTTP parsing, transport)",
    "h11": "uvicorn (HTTP parsing, transport)",
    "httptools": "uvicorn (HTTP parsing, transport)",
    "starlette/": "starlette/fastapi routing",
    "fastapi/": "starlette/fastapi routing",
    "asyncio/": "event loop",
    "concurrent/": "thread pool hops",
    "threading.py": "thread pool hops",
    "anyio/": "thread pool hops",
}


def profile_report(path: str, requests: int) -> list[tuple[str, float]]:
    """Own time (tottime) per layer, in ms per request, from the cProfile dump."""
    import pstats

    stats = pstats.Stats(path)
    per_layer: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{function}"
        if "select.epoll" in where:
            continue  # the event loop waiting for the next request: idle, not work
        layer = next((name for key, name in LAYERS.items() if key in where), "other")
        per_layer[layer] = per_layer.get(layer, 0.0) + tottime
    return sorted(((k, 1000 * v / requests) for k, v in per_layer.items()), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "default")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--requests", type=int, default=200, help="lone requests per server per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", help="run the catdog server under cProfile, dump to this file")
    parser.add_argument(
        "--compare-h11", action="store_true", help="also serve catdog on h11 + asyncio (no httptools/uvloop)"
    )
    parser.add_argument("--serve", choices=("catdog", "catdog-h11", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.model_dir, args.profile)
        return 0

    photo = sample_photos(args.data_dir, limit=1)[0]
    size = read_metadata(args.model_dir).image_size
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for kind in ("catdog", "naive", "catdog-h11") if args.compare_h11 else ("catdog", "naive"):
            port = free_port()
            command = [sys.executable, "-m", "benchmarks.overhead", "--serve", kind, "--port", str(port)]
            command += ["--model-dir", str(args.model_dir)]
            if kind == "catdog" and args.profile:
                command += ["--profile", args.profile]
            # Log lines go to /dev/null: their formatting is measured, not a terminal's speed.
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            servers[kind] = (process, f"http://127.0.0.1:{port}")
        for _, url in servers.values():
            wait_ok(f"{url}/readyz", timeout=120)
        for _, url in servers.values():
            lone_requests(url, photo, 20)  # warm-up
        if args.profile:
            servers["catdog"][0].send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        rounds: dict[str, list[float]] = {kind: [] for kind in servers}
        cpu: dict[str, list[float]] = {kind: [] for kind in servers}
        decode: list[float] = []
        decode_cpu: list[float] = []
        for _ in range(args.rounds):
            wall, on_cpu = decode_seconds(photo, size, 50)
            decode.append(wall)
            decode_cpu.append(on_cpu)
            for kind, (process, url) in servers.items():
                cpu_before = cpu_seconds(process.pid)
                rounds[kind].append(statistics.median(lone_requests(url, photo, args.requests)))
                cpu[kind].append((cpu_seconds(process.pid) - cpu_before) / args.requests)
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in servers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    decode_ms = 1000 * statistics.median(decode)
    decode_cpu_ms = 1000 * statistics.median(decode_cpu)
    result: dict[str, Any] = {
        "decode_ms": round(decode_ms, 3),
        "decode_cpu_ms": round(decode_cpu_ms, 3),
        "photo_bytes": len(photo),
        "rounds": args.rounds,
    }
    print(
        f"photo: {len(photo)} bytes; decode + resize to {size}px in-process: {decode_ms:.2f} ms wall "
        f"(median), {decode_cpu_ms:.2f} ms CPU"
    )
    print(
        "overhead = server's median lone-request latency - decode wall time; CPU overhead = server's CPU "
        "time per request - decode CPU time (robust to a busy machine)"
    )
    header = f"{'server':<10} {'latency ms':>11} {'overhead ms':>12} {'CPU ms/req':>11} {'CPU overhead':>13}"
    print(f"{header}  rounds")
    for kind, values in rounds.items():
        latency = 1000 * statistics.median(values)
        cpu_ms = 1000 * statistics.median(cpu[kind])
        result[kind] = {
            "latency_ms": round(latency, 3),
            "overhead_ms": round(latency - decode_ms, 3),
            "cpu_ms_per_request": round(cpu_ms, 3),
            "cpu_overhead_ms": round(cpu_ms - decode_cpu_ms, 3),
        }
        per_round = " ".join(f"{1000 * v:.2f}" for v in values)
        print(
            f"{kind:<10} {latency:>11.2f} {latency - decode_ms:>12.2f} {cpu_ms:>11.2f} "
            f"{cpu_ms - decode_cpu_ms:>13.2f}  {per_round}"
        )
    ratios = [c / n for c, n in zip(rounds["catdog"], rounds["naive"], strict=True)]
    result["catdog_over_naive_latency"] = round(statistics.median(ratios), 3)
    print(f"catdog/naive lone-request latency, same-round median: {statistics.median(ratios):.3f}")
    if args.profile:
        total = args.rounds * args.requests
        print(
            f"\ncatdog server's own CPU time by layer (cProfile tottime, ms per request, {total} requests):"
        )
        layers = profile_report(args.profile, total)
        result["profile_ms_per_request"] = {k: round(v, 3) for k, v in layers}
        for layer, ms in layers:
            print(f"  {layer:<52} {ms:6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
