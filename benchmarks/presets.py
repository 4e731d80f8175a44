"""Measure one trained model per training preset: the figures `python -m training presets` prints.

    python -m benchmarks.presets --model NAME=DIR [--model NAME=DIR ...]
        [--data-dir ../shared/data/cats_and_dogs_filtered] [--rounds 3] [--seconds 8]
        [--photos 64] [--write training/preset_results.json]

    e.g. python -m benchmarks.presets --model fast=runs/fast --model default=runs/default \\
             --model accurate=runs/accurate --write training/preset_results.json

NAME is a preset of training/presets.py (PRESETS), DIR a model exported by `python -m training train`.
The first model given is the baseline the ratios compare against.

For each model:
- accuracy, log loss, ROC AUC: read from metadata.json (`metrics`), i.e. as measured at training time
  on the data set's validation/ split; nothing is re-evaluated here.
- SavedModel size: saved_model.pb + variables/ on disk, in MB (10^6 bytes).
- raw model speed, in this process (no HTTP, no decoding in the timed loop): real validation photos
  (half cats, half dogs) decoded once with catdog.imaging.load_model_input at the model's image_size,
  then the model's signature called on them at batch 1 and at batch 32, after an untimed warm-up call
  per batch size. Batch 1 gives img/s and the median (p50) latency of a call; batch 32 gives img/s.

Machines are noisy, so runs are interleaved: for each round, for each model, batch 1 for --seconds/2
then batch 32 for --seconds/2. Each figure is the median over rounds, with the min-max range. Ratios
against the baseline are taken within a round (latency p50 at batch 1: lower is faster; throughput at
batch 32: higher is faster), then their median over rounds.

With --write, the figures are merged into the JSON file read by `python -m training presets`: entries
of presets not measured this time are kept, measured ones replaced; `command`, `machine`, `data` and
`date` describe this run (each entry records its own too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from catdog.contract import SAVED_MODEL_FILE
from catdog.imaging import load_model_input
from catdog.saved_model import ExportedModel, load_exported_model
from training.presets import PRESETS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
BATCH = 32
MAX_PIXELS = 40_000_000  # the service's default limit; validation photos are far below it
METRIC_KEYS = ("accuracy", "log_loss", "roc_auc")
METRICS_SOURCE = "metadata.json metrics, as measured at training time on validation/"


@dataclass
class Measured:
    """One model: what is read once, and the per-round speed figures."""

    name: str
    model_dir: Path
    model: ExportedModel
    size_mb: float
    metrics: dict[str, float | None]
    photos: np.ndarray  # uint8 [photos, image_size, image_size, 3]
    img_s_batch1: list[float] = field(default_factory=list)
    img_s_batch32: list[float] = field(default_factory=list)
    p50_ms_batch1: list[float] = field(default_factory=list)


def invocation() -> list[str]:
    """The command line that started this run, as recorded with the results."""
    if __spec__ is not None:  # python -m benchmarks.presets: argv[0] is this file's absolute path
        return ["python", "-m", __spec__.name, *sys.argv[1:]]
    return ["python", *sys.argv]


def parse_model(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(directory)


def saved_model_mb(model_dir: Path) -> float:
    files = [model_dir / SAVED_MODEL_FILE, *(p for p in (model_dir / "variables").rglob("*") if p.is_file())]
    return sum(p.stat().st_size for p in files) / 1e6


def validation_photo_paths(data_dir: Path, count: int) -> list[Path]:
    """`count` photos spread evenly over validation/, half from each class folder."""
    folders = sorted(p for p in (data_dir / "validation").iterdir() if p.is_dir())
    if not folders:
        raise SystemExit(f"no class folders under {data_dir / 'validation'}")
    per_class: list[list[Path]] = []
    for index, folder in enumerate(folders):
        share = count // len(folders) + (1 if index < count % len(folders) else 0)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(files) < share:
            raise SystemExit(f"{folder} holds {len(files)} photos, {share} needed")
        step = len(files) / share
        per_class.append([files[int(i * step)] for i in range(share)])
    # Round-robin over the classes, so every batch of 32 mixes cats and dogs.
    return [photos[i] for i in range(max(map(len, per_class))) for photos in per_class if i < len(photos)]


def training_metrics(model: ExportedModel) -> dict[str, float | None]:
    metrics = (model.metadata.model_extra or {}).get("metrics") or {}
    split = metrics.get("split", "validation")
    if split != "validation":
        print(
            f"warning: {model.model_dir}: metadata metrics are on {split!r}, not validation", file=sys.stderr
        )
    return {key: (float(metrics[key]) if metrics.get(key) is not None else None) for key in METRIC_KEYS}


def check_preset(name: str, model: ExportedModel) -> None:
    """Warn when the model does not look like it was trained with preset NAME."""
    extra = model.metadata.model_extra or {}
    recorded = extra.get("preset")
    if recorded is not None and recorded != name:
        print(
            f"warning: {model.model_dir} was trained with preset {recorded!r}, measured as {name!r}",
            file=sys.stderr,
        )
    preset = PRESETS.get(name)
    if preset is not None and preset.settings.get("arch") != model.metadata.architecture:
        print(
            f"warning: preset {name!r} trains {preset.settings.get('arch')}, "
            f"{model.model_dir} is {model.metadata.architecture}",
            file=sys.stderr,
        )


def time_batch1(model: ExportedModel, photos: np.ndarray, seconds: float) -> tuple[float, float]:
    """img/s and p50 latency (ms) of single-image calls, cycling through the photos."""
    model.predict(photos[:1])  # untimed: the first call after another model ran pays for caches
    latencies: list[float] = []
    started = time.perf_counter()
    index = 0
    while not latencies or time.perf_counter() - started < seconds:
        image = photos[index % len(photos)][None]
        began = time.perf_counter()
        model.predict(image)
        latencies.append(time.perf_counter() - began)
        index += 1
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def time_batch32(model: ExportedModel, photos: np.ndarray, seconds: float) -> float:
    """img/s of BATCH-image calls, cycling through the photos in consecutive batches."""
    batches = [photos[i : i + BATCH] for i in range(0, len(photos) - BATCH + 1, BATCH)]
    model.predict(batches[0])  # untimed, as above
    images, calls = 0, 0
    started = time.perf_counter()
    while not calls or time.perf_counter() - started < seconds:
        batch = batches[calls % len(batches)]
        model.predict(batch)
        images += len(batch)
        calls += 1
    return images / (time.perf_counter() - started)


def machine_description() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        accelerator = "GPU: " + ", ".join(names)
    else:
        accelerator = "no GPU"
    return f"{cores} cores, {cpu}, {accelerator}"


def spread(values: list[float], digits: int) -> str:
    """Median, with the min-max range when there are several rounds."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def metric_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def ratios(models: list[Measured]) -> dict[str, tuple[list[float], list[float]]]:
    """Same-round ratios against models[0]: p50 latency at batch 1, img/s at batch 32."""
    base = models[0]
    return {
        m.name: (
            [a / b for a, b in zip(m.p50_ms_batch1, base.p50_ms_batch1, strict=True)],
            [a / b for a, b in zip(m.img_s_batch32, base.img_s_batch32, strict=True)],
        )
        for m in models
    }


def markdown_table(models: list[Measured]) -> str:
    same_round = ratios(models)
    base = models[0].name
    lines = [
        f"| preset | accuracy | log loss | ROC AUC | img/s b1 | img/s b{BATCH} | p50 ms b1 "
        f"| ratio vs {base} (latency b1 / img/s b{BATCH}) | SavedModel MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        latency_ratio, throughput_ratio = same_round[m.name]
        ratio = (
            "baseline" if m is models[0] else f"{spread(latency_ratio, 2)}x / {spread(throughput_ratio, 2)}x"
        )
        lines.append(
            f"| {m.name} | {metric_text(m.metrics['accuracy'])} | {metric_text(m.metrics['log_loss'])} "
            f"| {metric_text(m.metrics['roc_auc'])} | {spread(m.img_s_batch1, 1)} "
            f"| {spread(m.img_s_batch32, 1)} | {spread(m.p50_ms_batch1, 1)} "
            f"| {ratio} | {m.size_mb:.1f} |"
        )
    return "\n".join(lines)


def write_results(
    path: Path, models: list[Measured], *, command: str, machine: str, data: str, args: argparse.Namespace
) -> None:
    try:
        results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        results = {}
    date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    same_round = ratios(models)
    presets: dict[str, Any] = dict(results.get("presets", {}))
    for m in models:
        latency_ratio, throughput_ratio = same_round[m.name]
        presets[m.name] = {
            **{key: m.metrics[key] for key in METRIC_KEYS},
            "metrics_source": METRICS_SOURCE,
            "img_s_batch1": statistics.median(m.img_s_batch1),
            "img_s_batch32": statistics.median(m.img_s_batch32),
            "p50_ms_batch1": statistics.median(m.p50_ms_batch1),
            "img_s_batch1_range": [min(m.img_s_batch1), max(m.img_s_batch1)],
            "img_s_batch32_range": [min(m.img_s_batch32), max(m.img_s_batch32)],
            "p50_ms_batch1_range": [min(m.p50_ms_batch1), max(m.p50_ms_batch1)],
            "vs_baseline": {
                "baseline": models[0].name,
                "latency_ratio_batch1": statistics.median(latency_ratio),
                "throughput_ratio_batch32": statistics.median(throughput_ratio),
            },
            "size_mb": m.size_mb,
            "architecture": m.model.metadata.architecture,
            "image_size": m.model.metadata.image_size,
            "model_version": m.model.metadata.version,
            "model_dir": str(m.model_dir),
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "photos": args.photos,
            "machine": machine,
            "date": date,
            "command": command,
        }
    results.update(
        {
            "command": command,
            "machine": machine,
            "data": data,
            "date": date,
            "presets": {name: presets[name] for name in sorted(presets, key=_preset_order)},
        }
    )
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _preset_order(name: str) -> tuple[int, str]:
    names = list(PRESETS)
    return (names.index(name) if name in names else len(names), name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        dest="models",
        type=parse_model,
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="preset name and exported model directory; repeat; the first is the baseline",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="holds validation/<class>/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per model per round, split over b1/b32")
    parser.add_argument("--photos", type=int, default=64, help=f"validation photos used (>= {BATCH})")
    parser.add_argument("--write", type=Path, metavar="JSON", help="merge the figures into this file")
    args = parser.parse_args()
    names = [name for name, _ in args.models]
    if len(set(names)) != len(names):
        parser.error(f"each NAME once: {names}")
    if args.rounds < 1 or args.seconds <= 0 or args.photos < BATCH:
        parser.error(f"need --rounds >= 1, --seconds > 0, --photos >= {BATCH}")
    if args.write is not None and (unknown := [n for n in names if n not in PRESETS]):
        parser.error(f"--write needs preset names ({', '.join(PRESETS)}), got {unknown}")

    command = shlex.join(invocation())
    paths = validation_photo_paths(args.data_dir, args.photos)
    decoded: dict[int, np.ndarray] = {}
    models: list[Measured] = []
    for name, model_dir in args.models:
        model = load_exported_model(model_dir)
        check_preset(name, model)
        size = model.metadata.image_size
        if size not in decoded:
            decoded[size] = np.stack([load_model_input(p.read_bytes(), size, MAX_PIXELS) for p in paths])
        metrics = training_metrics(model)
        if args.write is not None and any(metrics[key] is None for key in METRIC_KEYS):
            raise SystemExit(f"{model_dir}/metadata.json lacks {METRIC_KEYS} metrics; cannot --write")
        photos = decoded[size]
        model.predict(photos[:1])  # warm-up per batch size: graph tracing, allocations
        model.predict(photos[:BATCH])
        models.append(Measured(name, model_dir, model, saved_model_mb(model_dir), metrics, photos))
        print(
            f"loaded {name}: {model_dir} ({model.metadata.architecture}, {size}px, "
            f"{model.load_seconds:.1f} s to load)",
            flush=True,
        )

    half = args.seconds / 2
    for round_index in range(args.rounds):
        for m in models:
            img_s, p50_ms = time_batch1(m.model, m.photos, half)
            m.img_s_batch1.append(img_s)
            m.p50_ms_batch1.append(p50_ms)
            m.img_s_batch32.append(time_batch32(m.model, m.photos, half))
            print(
                f"round {round_index + 1}/{args.rounds} {m.name}: b1 {img_s:.1f} img/s, p50 {p50_ms:.1f} ms; "
                f"b{BATCH} {m.img_s_batch32[-1]:.1f} img/s",
                flush=True,
            )

    machine = machine_description()
    data = args.data_dir.resolve().name
    print()
    print(f"command: {command}")
    print(f"machine: {machine}")
    print(
        f"accuracy, log loss, ROC AUC: from each model's metadata.json, as measured at training time "
        f"on validation/ of {data}"
    )
    print(
        f"speed: raw model calls (no HTTP) on {len(paths)} validation photos decoded once; "
        f"median of {args.rounds} round(s) of {args.seconds:g} s per model (min-max); "
        f"ratios same-round vs {models[0].name}: p50 latency at b1 (lower is faster), "
        f"img/s at b{BATCH} (higher is faster)"
    )
    print()
    print(markdown_table(models))
    if args.write is not None:
        write_results(args.write, models, command=command, machine=machine, data=data, args=args)
        print(f"\nwrote {', '.join(names)} into {args.write}")


if __name__ == "__main__":
    main()
