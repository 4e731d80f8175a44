"""The model in every CPU runtime it was derived for: img/s at batch 1 and 16, latency, accuracy.

    .venv/bin/python -m benchmarks.runtimes [--model-dir model/default] [--rounds 5] [--seconds 2]
    .venv/bin/python -m benchmarks.runtimes --tflite old=OLD.tflite --tflite new=NEW.tflite   # raw files

Loads the SavedModel in TensorFlow and every derived model metadata.json lists (present here, its
runtime installed; `python -m training derive` writes them), then times them on real photos in
interleaved rounds: each round runs every runtime in turn, so a machine shared with other work
slows them alike, and the speed-ups are same-round ratios (median over rounds). Accuracy and log
loss are the equivalence check's figures on the validation photos (from metadata.json).

`--tflite LABEL=FILE` adds LiteRT files of the same input size to the rounds, whatever their gate
said (a model that failed it is never served, but what it would cost is still a figure to compare).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from catdog.contract import read_metadata
from catdog.imaging import load_model_input
from catdog.runtimes import LiteRtRunner, runtime_installed, runtime_threads
from catdog.saved_model import load_exported_model
from training.derive import measure_speed

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "default")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per runtime, batch size and round")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--tflite", action="append", default=[], metavar="LABEL=FILE", help="also time this LiteRT file"
    )
    args = parser.parse_args(argv)

    metadata = read_metadata(args.model_dir)
    size = metadata.image_size
    paths = sorted((args.data_dir / "validation").glob("*/*.jpg"))[::30][:32]
    images = np.stack([load_model_input(p.read_bytes(), size, 40_000_000) for p in paths])
    runners = {"tensorflow": load_exported_model(args.model_dir, "tensorflow").predict}
    figures: dict[str, dict[str, float]] = {}
    for entry in metadata.derived:
        usable = entry.passed and runtime_installed(entry.runtime) and (args.model_dir / entry.file).is_file()
        if usable:
            runners[entry.key] = load_exported_model(args.model_dir, entry.key).predict
            figures[entry.key] = entry.equivalence
        else:
            print(f"skipping {entry.key}: {entry.reason or 'not present or runtime not installed'}")
    threads = runtime_threads()
    for spec in args.tflite:
        label, _, file = spec.partition("=")
        if not file:
            parser.error(f"--tflite expects LABEL=FILE, got {spec!r}")
        runners[label] = LiteRtRunner(Path(file), size, "file", threads)
    print(f"{len(images)} real photos, {threads} threads per runtime, {args.rounds} interleaved rounds")
    speed = measure_speed(runners, images, rounds=args.rounds, seconds=args.seconds)
    reference = next((e.equivalence for e in metadata.derived if e.equivalence), {})
    print(
        "\n| runtime | batch 1 latency ms | batch 1 img/s | batch 16 img/s | b1 speed-up | b16 speed-up "
        "| accuracy | log loss |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, values in speed.items():
        eq = figures.get(name, {}) if name != "tensorflow" else {}
        accuracy = eq.get("accuracy", reference.get("reference_accuracy") if name == "tensorflow" else None)
        loss = eq.get("log_loss", reference.get("reference_log_loss") if name == "tensorflow" else None)
        print(
            f"| {name} | {values['batch1_ms']:.1f} | {1000 / values['batch1_ms']:.1f} | "
            f"{values['batch16_images_per_s']:.1f} | {values['batch1_speedup']:.2f}x | "
            f"{values['batch16_speedup']:.2f}x | {'-' if accuracy is None else f'{accuracy:.4f}'} | "
            f"{'-' if loss is None else f'{loss:.4f}'} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(speed, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
