"""The `catdog` command.

    catdog serve [--port 8000 ...]          the service (python -m app serve)
    catdog train --data-dir DATA --output model/x [...]     training (python -m training train)
    catdog predict PHOTO_OR_FOLDER... [--url URL] [--json] [--concurrency N]

`serve` and `train` hand over to `python -m app` / `python -m training` with the same Python, so
this package imports neither (catdog/ is what both share). `predict` talks to a running service
through `catdog.client`: folders are expanded to the images in them, a progress bar shows on a
terminal, a 503 is retried after the service's Retry-After. Output is a table, or one JSON object
per line with `--json`. Exit status: 0 when every photo got an answer, 1 when some did not, 2 for a
usage error or an unreachable service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catdog.client import DEFAULT_URL, AsyncClient, CatdogError, PredictionResult

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
URL_ENV = "CATDOG_URL"


def expand(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files as given, folders -> their images (recursively, sorted); and the paths that do not exist."""
    files: list[Path] = []
    missing: list[str] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            missing.append(name)
    return files, missing


def _handover(module: str, command: str, args: list[str]) -> int:
    """Replace this process with `python -m module command args` (same interpreter, same env)."""
    argv = [sys.executable, "-m", module, command, *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


async def _classify(
    files: list[Path], *, url: str, concurrency: int, retries: int, timeout: float, progress: bool
) -> list[PredictionResult | CatdogError]:
    results: list[PredictionResult | CatdogError | None] = [None] * len(files)
    semaphore = asyncio.Semaphore(concurrency)
    bar: Any = None
    task: Any = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("classifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        task = bar.add_task("photos", total=len(files))
        bar.start()

    async def one(index: int, client: AsyncClient) -> None:
        async with semaphore:
            try:
                results[index] = await client.predict(files[index])
            except CatdogError as exc:
                results[index] = exc
            except OSError as exc:  # unreadable file
                results[index] = CatdogError(0, "unreadable_file", str(exc))
        if bar is not None:
            bar.advance(task)

    try:
        async with AsyncClient(url, retries=retries, timeout=timeout, max_connections=concurrency) as client:
            await asyncio.gather(*(one(index, client) for index in range(len(files))))
    finally:
        if bar is not None:
            bar.stop()
    return [result for result in results if result is not None]


def _json_line(path: Path, result: PredictionResult | CatdogError) -> str:
    if isinstance(result, CatdogError):
        record: dict[str, Any] = {
            "file": str(path),
            "error": {"status": result.status_code, "code": result.code, "message": result.message},
        }
    else:
        record = {"file": str(path), **result.model_dump(exclude_none=True)}
    return json.dumps(record)


def probability(p: float) -> str:
    """Four decimals, never 1.0000 or 0.0000: no answer is certain (the service serves at most 0.999999)."""
    if p >= 0.99995:
        return ">0.9999"
    if p < 0.00005:
        return "<0.0001"
    return f"{p:.4f}"


def _table(pairs: list[tuple[Path, PredictionResult | CatdogError]]) -> None:
    from rich.console import Console
    from rich.table import Table

    answers = [result for _, result in pairs if not isinstance(result, CatdogError)]
    classes = list(answers[0].probabilities) if answers else []
    has_pet = any(answer.is_cat_or_dog is not None for answer in answers)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("photo", overflow="fold")  # folded only on a narrow terminal
    table.add_column("label")
    for name in classes:
        table.add_column(f"P({name})", justify="right")
    if has_pet:
        table.add_column("cat or dog?")
    table.add_column("ms", justify="right")
    for path, result in pairs:
        if isinstance(result, CatdogError):
            table.add_row(
                str(path), f"[red]error[/red]: {result.message}", *[""] * (len(classes) + has_pet + 1)
            )
            continue
        # A photo flagged as neither leads with that, as on the web page; the split stays in its columns.
        label = "not a cat or dog" if result.is_cat_or_dog is False else result.label
        row = [str(path), label, *(probability(result.probabilities[name]) for name in classes)]
        if has_pet:
            row.append({True: "yes", False: "no", None: ""}[result.is_cat_or_dog])
        row.append(f"{result.latency_ms:.0f}")
        table.add_row(*row)
    # On a terminal rich fits the table to its width; into a pipe or file, rows are never folded.
    Console(soft_wrap=False, width=None if sys.stdout.isatty() else 1000).print(table)


def predict(args: argparse.Namespace) -> int:
    files, missing = expand(args.photos)
    for name in missing:
        print(f"catdog: no such file or folder: {name}", file=sys.stderr)
    if not files:
        print("catdog: no photos to classify", file=sys.stderr)
        return 2
    progress = not args.no_progress and len(files) > 1 and sys.stderr.isatty()
    results = asyncio.run(
        _classify(
            files,
            url=args.url,
            concurrency=args.concurrency,
            retries=args.retries,
            timeout=args.timeout,
            progress=progress,
        )
    )
    pairs = list(zip(files, results, strict=True))
    unreachable = [r for r in results if isinstance(r, CatdogError) and r.code == "unreachable"]
    if len(unreachable) == len(results):
        print(f"catdog: cannot reach the service at {args.url}: {unreachable[0].message}", file=sys.stderr)
        return 2
    if args.json:
        for path, result in pairs:
            print(_json_line(path, result))
    else:
        _table(pairs)
    failed = sum(isinstance(result, CatdogError) for result in results)
    return 1 if failed or missing else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catdog", description="cat-vs-dog image classification")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve", help="run the service (python -m app serve; see `catdog serve --help`)", add_help=False
    )
    sub.add_parser(
        "train", help="train a model (python -m training train; see `catdog train --help`)", add_help=False
    )
    pred = sub.add_parser("predict", help="classify photos with a running service")
    pred.add_argument(
        "photos", nargs="+", metavar="PHOTO", help="image files or folders (searched recursively)"
    )
    pred.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"service URL (${URL_ENV}, default {DEFAULT_URL})",
    )
    pred.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    pred.add_argument(
        "--concurrency", type=_positive, default=4, help="requests in flight at once (default 4)"
    )
    pred.add_argument(
        "--retries", type=int, default=5, help="retries of a 503, after its Retry-After (default 5)"
    )
    pred.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    pred.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal only)")
    return parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # serve and train take their own flags: everything after the command goes to them untouched.
    if argv and argv[0] == "serve":
        return _handover("app", "serve", argv[1:])
    if argv and argv[0] == "train":
        return _handover("training", "train", argv[1:])
    args = build_parser().parse_args(argv)
    return predict(args)


if __name__ == "__main__":
    sys.exit(main())
