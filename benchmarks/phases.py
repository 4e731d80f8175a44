"""Where a lone request's time goes inside catdog and inside the naive FastAPI app, with the real model.

    .venv/bin/python -m benchmarks.phases [--rounds 2] [--seconds 6] [--runtime auto]

Each server runs as it does in the peers benchmark (catdog: `python -m app serve`'s app and uvicorn
settings; naive: benchmarks/peers/naive_fastapi.py), in its own process, with timestamps taken at
the same points of both (wrappers installed before the app starts):

  arrive    uvicorn receives the request's first bytes (HttpToolsProtocol.data_received)
  app       FastAPI's app is called
  decode    the upload's decoding starts (catdog.imaging.probe_image, in a worker thread)
  model     the model call starts (ExportedModel.predict) ... and ends
  sent      the response body is handed to uvicorn
  done      the request's ASGI call returns (after-response work: metrics, logs)

hey sends one request at a time (same photo, keep-alive) to one server while the other is stopped,
rounds interleaved; the per-phase medians are printed per server. "event loop, critical path" is
arrive -> decode plus model end -> sent: what the HTTP side adds to a lone request's latency. The
wrappers cost a few microseconds each; both servers carry the same ones. `--stub-sleep-ms 15`
swaps the model call for a sleep, to see the servers with the CPU idle between requests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from benchmarks.common import sample_photos
    from benchmarks.peers.run import DATA_DIR, REPO_ROOT, Server, System, load_with_hey, multipart
except ModuleNotFoundError as error:
    raise SystemExit("run it from the repo root as: python -m benchmarks.phases") from error

MARKS = ("arrive", "app", "decode", "model", "model_end", "sent", "done")
PHASES = {
    "uvicorn: arrive -> app": ("arrive", "app"),
    "middleware, routing, upload, hand-off: app -> decode": ("app", "decode"),
    "decoding: decode -> model": ("decode", "model"),
    "model call": ("model", "model_end"),
    "hand-back, answer, response: model end -> sent": ("model_end", "sent"),
    "after the response: sent -> done": ("sent", "done"),
}


def install_checkpoints(stub_sleep_s: float | None = None) -> list[dict[str, float]]:
    """Child process: wrap the checkpoints above; the list fills with each request's marks.

    `stub_sleep_s`: after the warm-up calls, the model call sleeps that long and answers what the
    real model answered for the same batch size during warm-up (the CPU stays idle meanwhile)."""
    from fastapi import FastAPI
    from uvicorn.protocols.http import httptools_impl

    import catdog.imaging
    import catdog.saved_model

    marks: dict[str, float] = {}
    requests: list[dict[str, float]] = []
    clock = time.perf_counter

    def mark(name: str) -> None:
        marks.setdefault(name, clock())

    protocol = httptools_impl.HttpToolsProtocol
    data_received = protocol.data_received

    def on_data(self: Any, data: bytes) -> None:
        if "arrive" not in marks or "done" in marks:  # the first bytes of the next request
            if "done" in marks:
                requests.append(dict(marks))
            marks.clear()
            marks["arrive"] = clock()
        data_received(self, data)

    protocol.data_received = on_data  # type: ignore[method-assign]

    cycle = httptools_impl.RequestResponseCycle
    send, run_asgi = cycle.send, cycle.run_asgi

    async def on_send(self: Any, message: Any) -> None:
        if message["type"] == "http.response.body":
            mark("sent")
        await send(self, message)

    async def on_run(self: Any, app: Any) -> None:
        try:
            await run_asgi(self, app)
        finally:
            mark("done")

    cycle.send, cycle.run_asgi = on_send, on_run  # type: ignore[method-assign]

    fastapi_call = FastAPI.__call__

    async def on_app(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            mark("app")
        await fastapi_call(self, scope, receive, send)

    FastAPI.__call__ = on_app  # type: ignore[method-assign]

    probe = catdog.imaging.probe_image

    @functools.wraps(probe)
    def on_probe(*args: Any, **kwargs: Any) -> Any:
        mark("decode")
        return probe(*args, **kwargs)

    catdog.imaging.probe_image = on_probe  # load_model_input (naive) looks it up here
    import app.service  # catdog imported it by name

    app.service.probe_image = on_probe  # type: ignore[attr-defined]

    predict = catdog.saved_model.ExportedModel.predict
    answers: dict[int, Any] = {}

    def on_predict(self: Any, images: Any) -> Any:
        mark("model")
        try:
            if stub_sleep_s is not None and len(images) in answers:
                time.sleep(stub_sleep_s)
                return answers[len(images)]
            return answers.setdefault(len(images), predict(self, images))
        finally:
            mark("model_end")

    catdog.saved_model.ExportedModel.predict = on_predict  # type: ignore[method-assign]
    return requests


def serve(kind: str, port: int, model_dir: Path, out: Path, stub_sleep_s: float | None) -> None:
    """Child process: serve `kind` with checkpoints until SIGTERM, then write the marks to `out`."""
    requests = install_checkpoints(stub_sleep_s)
    # uvicorn raises the SIGTERM it caught again once it has shut down; with Python's default
    # handler that would end the process before the marks are written.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if kind == "catdog":
        from app.__main__ import main as app_main

        os.environ["CATDOG_LOG_LEVEL"] = "WARNING"
        app_main(["serve", "--no-auto-train", "--port", str(port), "--model-dir", str(model_dir)])
    else:
        import uvicorn

        os.environ["PEER_MODEL_DIR"] = str(model_dir)
        uvicorn.run(
            "benchmarks.peers.naive_fastapi:app",
            port=port,
            log_level="warning",
            access_log=False,
        )
    out.write_text(json.dumps(requests))


def medians(requests: list[dict[str, float]], skip: int = 20) -> dict[str, float]:
    """Median ms per phase over the complete requests (the first `skip` are warm-up)."""
    complete = [r for r in requests[skip:] if all(m in r for m in MARKS)]
    found = {
        phase: statistics.median(r[b] - r[a] for r in complete) * 1000 for phase, (a, b) in PHASES.items()
    }
    found["event loop, critical path"] = statistics.median(
        (r["decode"] - r["arrive"] + r["sent"] - r["model_end"]) * 1000 for r in complete
    )
    found["requests"] = len(complete)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--runtime", default="auto", help="CATDOG_RUNTIME / PEER_RUNTIME for both")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "default")
    parser.add_argument(
        "--stub-sleep-ms",
        type=float,
        help="replace the model call by a sleep this long (same answers): the CPU idles meanwhile",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # child: catdog | naive
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        stub = None if args.stub_sleep_ms is None else args.stub_sleep_ms / 1000
        serve(args.serve, args.port, args.model_dir, args.out, stub)
        return 0
    if shutil.which("hey") is None:
        raise SystemExit("needs hey: apt-get install hey")
    photo = sample_photos(DATA_DIR, limit=1)[0]
    body = multipart(photo, "file")
    env = {"CATDOG_RUNTIME": args.runtime, "PEER_RUNTIME": args.runtime, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results: dict[str, list[dict[str, float]]] = {"catdog": [], "naive": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            kinds = ["catdog", "naive"] if round_index % 2 == 0 else ["naive", "catdog"]
            for kind in kinds:
                out = Path(scratch) / f"{kind}-{round_index}.json"
                command = [sys.executable, "-m", "benchmarks.phases", "--serve", kind, "--port", "{port}"]
                command += ["--out", str(out), "--model-dir", str(args.model_dir)]
                if args.stub_sleep_ms is not None:
                    command += ["--stub-sleep-ms", str(args.stub_sleep_ms)]
                server = Server(System(kind, command, "/readyz", env=env))
                try:
                    server.wait(timeout=300)
                    run = load_with_hey(server.base + "/predict", body, 1, args.seconds)
                finally:
                    server.stop()
                found = medians(json.loads(out.read_text()))
                results[kind].append(found)
                print(
                    f"round {round_index + 1} {kind:<6} {run.rps:6.1f} req/s  "
                    f"event loop on the critical path {found['event loop, critical path']:.3f} ms",
                    flush=True,
                )
    print(f"\nmedian ms per lone request ({args.rounds} rounds, hey -c 1, same photo):")
    print("| phase | catdog | naive |")
    print("|---|---|---|")
    for phase in [*PHASES, "event loop, critical path"]:
        cells = [statistics.median(r[phase] for r in results[kind]) for kind in ("catdog", "naive")]
        print(f"| {phase} | {cells[0]:.3f} | {cells[1]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
