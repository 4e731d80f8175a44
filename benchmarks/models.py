"""Service throughput of several models and runtimes, same photos, same machine, in the same run.

    .venv/bin/python -m benchmarks.models BASELINE OTHER... [--concurrency 1 8] [--rounds 5] [--seconds 8]

Each argument is LABEL=MODEL_DIR[:RUNTIME] (runtime default auto), e.g.
`old=runs/old-default:litert-int8 new=model/default`. Every configuration is served by
`python -m app serve` at the same time; while one is measured the others are stopped (SIGSTOP).
Rounds are interleaved, in rotating order; each configuration's throughput is divided by the
baseline's in the same round, and the median over rounds is printed with how many rounds it was
ahead. The load comes from `hey` (the peers benchmark's helpers), posting validation photos in turn.
The cost that matters for a model's budget is the baseline's req/s / its req/s at saturation, same
round (median, and the range over rounds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

try:
    from benchmarks.common import sample_photos
    from benchmarks.peers.run import CACHE, DATA_DIR, Run, Server, System, measure, multipart
except ModuleNotFoundError as error:
    raise SystemExit("run it from the repo root as: python -m benchmarks.models") from error


def configuration(spec: str) -> System:
    label, _, target = spec.partition("=")
    if not target:
        raise SystemExit(f"expected LABEL=MODEL_DIR[:RUNTIME], got {spec!r}")
    model_dir, _, runtime = target.partition(":")
    env = {"CATDOG_MODEL_DIR": str(Path(model_dir).resolve()), "CATDOG_RUNTIME": runtime or "auto"}
    env |= {"CATDOG_HOST": "127.0.0.1", "CATDOG_LOG_LEVEL": "WARNING", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "app", "serve", "--no-auto-train", "--port", "{port}"]
    return System(label, command, "/readyz", env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "configurations", nargs="+", help="LABEL=MODEL_DIR[:RUNTIME]; the first is the baseline"
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--photos", type=int, default=1, help="validation photos posted (one body per run)")
    args = parser.parse_args(argv)

    systems = [configuration(spec) for spec in args.configurations]
    CACHE.mkdir(parents=True, exist_ok=True)  # hey reads the request body from a file there
    photos = sample_photos(DATA_DIR, limit=max(1, args.photos))
    servers = {system.name: Server(system) for system in systems}
    runs: dict[str, dict[int, list[Run]]] = {s.name: {c: [] for c in args.concurrency} for s in systems}
    names = list(servers)
    try:
        for server in servers.values():
            server.wait(timeout=300)
            measure(server, multipart(photos[0], "file"), 4, 2, use_hey=True)  # warm-up
        for round_index in range(args.rounds):
            for concurrency in args.concurrency:
                rotation = round_index % len(names)
                for name in names[rotation:] + names[:rotation]:
                    for other, server in servers.items():
                        server.pause(other != name)
                    body = multipart(photos[round_index % len(photos)], "file")
                    run = measure(servers[name], body, concurrency, args.seconds, use_hey=True)
                    runs[name][concurrency].append(run)
                    print(
                        f"round {round_index + 1} c={concurrency} {name}: {run.rps:.1f} req/s, "
                        f"p50 {run.percentile(50):.1f} ms, {run.errors} errors",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    baseline = names[0]
    print(
        f"\n{'configuration':<24} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'vs ' + baseline:>14} {'ahead':>6}"
        f"  cost (per-round range)"
    )
    for name in names:
        for concurrency in args.concurrency:
            mine, base = runs[name][concurrency], runs[baseline][concurrency]
            ratios = [a.rps / b.rps for a, b in zip(mine, base, strict=True)]
            rps, p50 = (
                statistics.median(r.rps for r in mine),
                statistics.median(r.percentile(50) for r in mine),
            )
            costs = [1 / r for r in ratios]
            print(
                f"{name:<24} {concurrency:>3} {rps:8.1f} {p50:8.1f} {statistics.median(ratios):13.3f}x "
                f"{sum(r > 1 for r in ratios):>3}/{len(ratios)}  {statistics.median(costs):.3f}x "
                f"({min(costs):.3f}-{max(costs):.3f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
