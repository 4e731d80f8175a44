"""The service as it is against the service at another commit: same model, same photo, same machine.

    .venv/bin/python -m benchmarks.commits --base REV [--rounds 3] [--seconds 8] [--concurrency 1 8 32]

The other commit is checked out into a temporary git worktree and served by this venv
(`python -m app serve` from that tree; the venv's packages are shared, the code is the tree's). Both
servers serve the same model (CATDOG_MODEL_DIR, the committed default unless --model-dir) in the same
runtime, each in its own process on a loopback port, and are loaded one at a time: for each round
and concurrency, `hey` posts the same photo (raw JPEG body) for --seconds to one and then the other,
the order alternating between rounds. Printed per concurrency: requests/s of each (median of the
rounds), their ratio (this tree / base, median of the same-round ratios) and the rounds this tree
won. The server started first ran ~1% faster in A/A runs (both trees the same commit), so the pair is
started twice: this tree first for the first half of the rounds, the base first for the second half.
Needs `hey` on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import free_port, sample_photos, wait_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"


def start(tree: Path, model_dir: Path, runtime: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CATDOG_HOST": "127.0.0.1",
        "CATDOG_PORT": str(port),
        "CATDOG_MODEL_DIR": str(model_dir),
        "CATDOG_RUNTIME": runtime,
        "CATDOG_LOG_LEVEL": "WARNING",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # The tree's own code first: the venv may hold an editable install of this checkout.
        "PYTHONPATH": str(tree),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--no-auto-train"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, timeout=180)
    return process, base_url


def play(
    servers: dict[str, str],
    rounds: range,
    args: argparse.Namespace,
    photo: Path,
    figures: dict[int, dict[str, list[float]]],
) -> None:
    """`rounds` of every concurrency against each server, the order alternating between rounds."""
    names = list(figures[args.concurrency[0]])
    for round_index in rounds:
        order = names if round_index % 2 == 0 else names[::-1]
        for concurrency in args.concurrency:
            for name in order:
                rate = requests_per_second(servers[name], photo, concurrency, args.seconds)
                figures[concurrency][name].append(rate)
                print(f"round {round_index + 1} c={concurrency} {name}: {rate:.1f} req/s", flush=True)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def requests_per_second(base_url: str, photo: Path, concurrency: int, seconds: float) -> float:
    output = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "image/jpeg",
         "-D", str(photo), f"{base_url}/predict"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    errors = re.search(r"Error distribution:", output)
    statuses = re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)
    if errors or any(status != "200" for status, _ in statuses):
        raise RuntimeError(f"requests failed against {base_url}:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"no Requests/sec in hey's output:\n{output}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (any git revision)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "default")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not on PATH")

    photo_bytes = sample_photos(args.data_dir, limit=1)[0]
    with tempfile.TemporaryDirectory(prefix="catdog-commits-") as scratch:
        photo = Path(scratch) / "photo.jpg"
        photo.write_bytes(photo_bytes)
        base_tree = Path(scratch) / "base"
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
            check=True, capture_output=True,
        )  # fmt: skip
        trees = {"this tree": REPO_ROOT, f"base {args.base}": base_tree}
        names = list(trees)
        figures: dict[int, dict[str, list[float]]] = {c: {n: [] for n in names} for c in args.concurrency}
        try:
            for half, rounds in enumerate((range(0, args.rounds // 2), range(args.rounds // 2, args.rounds))):
                start_order = names if half == 0 else names[::-1]
                servers, processes = {}, []
                try:
                    for name in start_order:
                        process, url = start(trees[name], args.model_dir.resolve(), args.runtime)
                        processes.append(process)
                        servers[name] = url
                    play(servers, rounds, args, photo, figures)
                finally:
                    stop(processes)
            print(f"\n| concurrency | {names[0]} req/s | {names[1]} req/s | ratio | rounds won |")
            print("|---|---|---|---|---|")
            for concurrency, by_name in figures.items():
                mine, base = by_name[names[0]], by_name[names[1]]
                ratios = [a / b for a, b in zip(mine, base, strict=True)]
                won = sum(ratio > 1 for ratio in ratios)
                print(
                    f"| {concurrency} | {statistics.median(mine):.1f} | {statistics.median(base):.1f} | "
                    f"{statistics.median(ratios):.3f} | {won} of {len(ratios)} |"
                )
        finally:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(base_tree)],
                check=False, capture_output=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
