"""catdog against its peers, same model, same photo, same machine: throughput, latency, errors, RSS.

    .venv/bin/python -m benchmarks.peers.run [--systems catdog naive bentoml litserve raw]
        [--concurrency 1 8 32] [--rounds 3] [--seconds 10] [--runtime auto] [--json out.json]

- Peers' packages live in their own venvs under ~/.cache/catdog-bench/<peer> (created on first use:
  `pip install bentoml` / `litserve`, with the project venv's numpy and Pillow versions;
  a .pth file makes the project's packages and this repo importable there). Nothing is added to the
  project's dependencies. `--no-install` skips peers whose venv is missing instead.
- Load comes from `hey` (Debian: `apt-get install hey`), a Go client that costs little CPU, sending
  the same multipart photo; every run lasts `--seconds`. Without hey, an asyncio httpx client in
  this process (it costs more CPU: said in the output).
- Rounds are interleaved: each round runs every system at every concurrency, in rotating order, so
  a machine shared with other work slows them alike; ratios are computed within each round and
  the median over rounds is reported.
- `raw`: no HTTP, in this process: decode 16 photos with catdog.imaging, one model call on the
  batch, repeat (the "raw batched model with the same decoding").
- RSS: the peak resident memory of the server's whole process tree during the run.
- Only the system being measured runs: the other servers are stopped (SIGSTOP) meanwhile, since an
  idle server may still use CPU (LitServe polls its queues).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks.common import free_port, sample_photos
    from benchmarks.peers.common import wait_ok
except ModuleNotFoundError as error:
    raise SystemExit("run it from the repo root as: python -m benchmarks.peers.run") from error

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
CACHE = Path(os.environ.get("CATDOG_BENCH_CACHE", Path.home() / ".cache" / "catdog-bench"))
BOUNDARY = "catdogbenchboundary"
SHARED_PINS = ("numpy", "pillow")
PEER_PACKAGES = {"bentoml": ["bentoml>=1.3"], "litserve": ["litserve>=0.2"]}


@dataclass
class System:
    name: str
    command: list[str]
    ready_path: str
    predict_path: str = "/predict"
    field_name: str = "file"
    env: dict[str, str] = field(default_factory=dict)


def peer_python(peer: str) -> Path:
    return CACHE / peer / "bin" / "python"


def ensure_venv(peer: str, install: bool) -> Path | None:
    """The peer's venv python, created and installed if missing (None: missing and not installing)."""
    python = peer_python(peer)
    marker = CACHE / peer / ".catdog-ready"
    if marker.is_file():
        return python
    if not install:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"creating {CACHE / peer} and installing {PEER_PACKAGES[peer]} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(CACHE / peer)], check=True)
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    constraints = CACHE / f"{peer}-constraints.txt"
    # The packages whose compiled parts the model's code shares with the peer: same versions. (Pinning
    # every shared package sends pip's resolver back to old BentoML releases that no longer build.)
    pinned = [line for line in freeze.splitlines() if line.lower().split("==")[0] in SHARED_PINS]
    constraints.write_text("\n".join(pinned) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-U", "pip"], check=True)
    install = [str(python), "-m", "pip", "install", "-q", "--only-binary=:all:", "-c", str(constraints)]
    subprocess.run([*install, *PEER_PACKAGES[peer]], check=True)
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    project_site = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # After the peer's own packages: the repo (catdog, benchmarks) and the project venv (the model's
    # runtime, Pillow, numpy), .pth files included.
    (Path(site_packages) / "catdog-project.pth").write_text(
        f"{REPO_ROOT}\nimport site; site.addsitedir({project_site!r})\n"
    )
    marker.write_text(" ".join(PEER_PACKAGES[peer]) + "\n")
    return python


def systems(names: list[str], runtime: str, model_dir: Path, install: bool) -> dict[str, System]:
    env = {"PEER_MODEL_DIR": str(model_dir), "PEER_RUNTIME": runtime, "TF_CPP_MIN_LOG_LEVEL": "3"}
    found: dict[str, System] = {}
    for name in names:
        port = "{port}"
        if name == "catdog":
            found[name] = System(
                name,
                [
                    sys.executable,
                    "-m",
                    "app",
                    "serve",
                    "--no-auto-train",
                    "--port",
                    port,
                    "--model-dir",
                    str(model_dir),
                ],
                "/readyz",
                env={"CATDOG_RUNTIME": runtime, "CATDOG_LOG_LEVEL": "WARNING"},
            )
        elif name == "naive":
            command = [sys.executable, "-m", "uvicorn", "benchmarks.peers.naive_fastapi:app", "--port", port]
            found[name] = System(name, [*command, "--log-level", "warning", "--no-access-log"], "/readyz")
        elif name in PEER_PACKAGES:
            python = ensure_venv(name, install)
            if python is None:
                print(f"skipping {name}: no venv at {CACHE / name} (run without --no-install)")
                continue
            if name == "bentoml":
                command = [str(python), "-m", "bentoml", "serve", "benchmarks.peers.bentoml_service:CatDog"]
                found[name] = System(name, [*command, "--port", port], "/readyz", field_name="images")
            else:
                command = [str(python), "-m", "benchmarks.peers.litserve_app", "--port", port]
                found[name] = System(name, command, "/health")
        elif name != "raw":
            raise SystemExit(f"unknown system {name!r}")
        if name in found:
            found[name].env = {**env, **found[name].env}
    return found


def multipart(photo: bytes, field_name: str) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field_name}"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + photo + f"\r\n--{BOUNDARY}--\r\n".encode()


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


@dataclass
class Run:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    peak_rss: int = 0

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")


def load_with_hey(url: str, body: bytes, concurrency: int, seconds: float) -> Run:
    body_file = CACHE / f"body-{os.getpid()}.bin"
    body_file.write_bytes(body)
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-D", str(body_file)]
    command += ["-T", f"multipart/form-data; boundary={BOUNDARY}", "-o", "csv", url]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rows = list(csv.DictReader(io.StringIO(output)))
    latencies = [float(r["response-time"]) for r in rows if r.get("status-code") == "200"]
    errors = sum(1 for r in rows if r.get("status-code") != "200")
    duration = max((float(r["offset"]) + float(r["response-time"]) for r in rows), default=seconds)
    return Run(len(rows), errors, max(duration, 1e-9), latencies)


def load_with_httpx(url: str, body: bytes, concurrency: int, seconds: float) -> Run:
    import httpx

    latencies: list[float] = []
    errors = 0
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}

    async def worker(client: httpx.AsyncClient, deadline: float) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    async def main() -> float:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            started = time.perf_counter()
            await asyncio.gather(*(worker(client, started + seconds) for _ in range(concurrency)))
            return time.perf_counter() - started

    duration = asyncio.run(main())
    return Run(len(latencies) + errors, errors, duration, latencies)


def raw_batched(
    photos: list[bytes], model_dir: Path, runtime: str, seconds: float, state: dict[str, Any]
) -> Run:
    """Decode 16 photos, one model call on the batch, repeat: img/s of the model with catdog's decoding."""
    from catdog.imaging import load_model_input
    from catdog.saved_model import load_exported_model

    if "model" not in state:
        state["model"] = load_exported_model(model_dir, runtime)
    model = state["model"]
    batch = (photos * 16)[:16]
    done, started = 0, time.perf_counter()
    model.predict(np.stack([load_model_input(p, model.metadata.image_size, 40_000_000) for p in batch]))
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(np.stack([load_model_input(p, model.metadata.image_size, 40_000_000) for p in batch]))
        done += len(batch)
    return Run(done, 0, time.perf_counter() - started, [])


class Server:
    def __init__(self, system: System) -> None:
        self.system = system
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in system.command]
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **system.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float) -> None:
        wait_ok(self.base + self.system.ready_path, timeout)

    def pause(self, paused: bool) -> None:
        """SIGSTOP / SIGCONT the server's whole process group while another system is measured:
        an idle server must not take CPU from the one under load (LitServe's workers poll their
        queues, ~18% of a core while idle here; the others ~0.2%)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        self.pause(False)
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)


def measure(server: Server, body: bytes, concurrency: int, seconds: float, use_hey: bool) -> Run:
    peak = 0
    running = True

    def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, tree_rss(server.process.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    url = server.base + server.system.predict_path
    try:
        run = (load_with_hey if use_hey else load_with_httpx)(url, body, concurrency, seconds)
    finally:
        running = False
        sampler.join()
    run.peak_rss = peak
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", nargs="+", default=["catdog", "naive", "bentoml", "litserve", "raw"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runtime", default="auto", help="CATDOG_RUNTIME for every system (same model)")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "default")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--no-install", action="store_true", help="skip peers whose venv is missing")
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args(argv)

    use_hey = shutil.which("hey") is not None
    generator = "hey" if use_hey else "httpx in this process (apt-get install hey for less noise)"
    print(f"load generator: {generator}")
    photo = sample_photos(args.data_dir, limit=1)[0]
    found = systems(args.systems, args.runtime, args.model_dir, not args.no_install)
    servers = {name: Server(system) for name, system in found.items()}
    results: dict[str, dict[int, list[Run]]] = {
        name: {c: [] for c in args.concurrency} for name in args.systems
    }
    raw_state: dict[str, Any] = {}
    try:
        for server in servers.values():
            server.wait(timeout=300)
            measure(server, multipart(photo, server.system.field_name), 4, 2, use_hey)  # warm-up
        order = [name for name in args.systems if name in servers or name == "raw"]
        for round_index in range(args.rounds):
            for concurrency in args.concurrency:
                rotation = round_index % len(order)
                for name in order[rotation:] + order[:rotation]:
                    if name == "raw" and concurrency != max(args.concurrency):
                        continue  # no HTTP, no concurrency: measured once per round, beside saturation
                    for other, server in servers.items():
                        server.pause(other != name)
                    if name == "raw":
                        run = raw_batched([photo], args.model_dir, args.runtime, args.seconds, raw_state)
                    else:
                        body = multipart(photo, servers[name].system.field_name)
                        run = measure(servers[name], body, concurrency, args.seconds, use_hey)
                    results[name][concurrency].append(run)
                    print(
                        f"round {round_index + 1} c={concurrency:<3} {name:<9} {run.rps:7.2f} req/s  "
                        f"p50 {run.percentile(50):7.1f} ms  errors {run.errors}  "
                        f"RSS {run.peak_rss / 2**20:.0f} MiB",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    report(results, args.concurrency)
    if args.json:
        payload = {
            name: {
                str(c): [
                    {
                        "rps": r.rps,
                        "errors": r.errors,
                        "requests": r.requests,
                        "p50_ms": r.percentile(50),
                        "p95_ms": r.percentile(95),
                        "p99_ms": r.percentile(99),
                        "peak_rss_mib": r.peak_rss / 2**20,
                    }
                    for r in runs
                ]
                for c, runs in by_c.items()
            }
            for name, by_c in results.items()
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def report(results: dict[str, dict[int, list[Run]]], concurrency: list[int]) -> None:
    print(
        "\n| system | c | req/s (median) | catdog / system (same-round median) "
        "| p50 ms | p95 ms | p99 ms | errors | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c in concurrency:
        catdog = results.get("catdog", {}).get(c, [])
        for name, by_c in results.items():
            runs = by_c[c]
            if not runs:
                continue
            ratio = ""
            if catdog and name != "catdog":
                ratio = f"{statistics.median(a.rps / b.rps for a, b in zip(catdog, runs, strict=True)):.2f}"
            latencies = [x for r in runs for x in r.latencies]
            pct = [
                float(np.percentile(latencies, q)) * 1000 if latencies else float("nan") for q in (50, 95, 99)
            ]
            print(
                f"| {name} | {c} | {statistics.median(r.rps for r in runs):.1f} | {ratio} | "
                f"{pct[0]:.1f} | {pct[1]:.1f} | {pct[2]:.1f} | {sum(r.errors for r in runs)} | "
                f"{max(r.peak_rss for r in runs) / 2**20:.0f} |"
            )
    print("\ncatdog / system, same-round ratios (the interval: mean +- 1.96 standard errors, 3+ rounds)")
    for c in concurrency:
        catdog = results.get("catdog", {}).get(c, [])
        for name, by_c in results.items():
            if catdog and name != "catdog" and by_c[c]:
                ratios = [a.rps / b.rps for a, b in zip(catdog, by_c[c], strict=True)]
                print(f"  c={c:<3} {name:<9} {ratio_summary(ratios)}")


def ratio_summary(ratios: list[float]) -> str:
    """Median, mean with a 95% interval (normal approximation) and how often catdog was ahead."""
    text = f"median {statistics.median(ratios):.3f}  mean {statistics.mean(ratios):.3f}"
    if len(ratios) >= 3:
        half = 1.96 * statistics.stdev(ratios) / len(ratios) ** 0.5
        text += f" [{statistics.mean(ratios) - half:.3f}, {statistics.mean(ratios) + half:.3f}]"
    return text + f"  ahead in {sum(r > 1 for r in ratios)} of {len(ratios)}"


if __name__ == "__main__":
    raise SystemExit(main())
