"""Command line: `python -m training train ...` and `python -m training evaluate ...`.

Mistakes a user can make (missing data, unknown architecture, no weights offline) end with one
`error: ...` line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from training.errors import TrainingError

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from training.architectures import ARCHITECTURES
    from training.presets import PRESETS

    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train, evaluate and export a model",
        description="Train a cat/dog classifier and export it (SavedModel + metadata.json + report/). "
        "Preset values apply unless overridden by a flag.",
    )
    train.add_argument("--data-dir", required=True, help="dataset root (class folders or Kaggle flat files)")
    train.add_argument("--output", required=True, help="model directory to write, e.g. model/default")
    train.add_argument(
        "--preset",
        help=f"training recipe: {', '.join(PRESETS)} (default: the one for --arch, else 'default')",
    )
    train.add_argument("--arch", help=f"architecture: {', '.join(ARCHITECTURES)}")
    train.add_argument("--image-size", type=int, help="square input size in pixels")
    train.add_argument("--epochs", type=int, help="epochs (phase 1 for transfer models)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--schedule", help="learning-rate schedule: cosine or constant")
    train.add_argument("--fine-tune-epochs", type=int, help="transfer models: epochs with the top unfrozen")
    train.add_argument("--fine-tune-lr", type=float, help="learning rate of the fine-tune phase (1e-5)")
    train.add_argument("--weights", help="backbone weights file for transfer models")
    train.add_argument(
        "--offline", action="store_true", default=None, help="never download weights (also CATDOG_OFFLINE=1)"
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--val-fraction", type=float, default=0.2, help="held out if no validation split")
    train.add_argument("--limit-per-class", type=_positive_int, help="first N files per class per split")
    train.add_argument("--version", help="model version (default <arch>-<YYYYMMDD>-<data hash>)")
    train.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    train.add_argument(
        "--flip-tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export a model that averages each image with its mirror image (preset default)",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="measure an exported model on a dataset split",
        description="Run every image of a split through catdog.imaging and the SavedModel's serve signature.",
    )
    evaluate.add_argument("--model", required=True, help="exported model directory")
    evaluate.add_argument("--data-dir", required=True)
    evaluate.add_argument("--split", default="validation", choices=("validation", "train"))
    evaluate.add_argument("--limit-per-class", type=_positive_int)
    evaluate.add_argument("--val-fraction", type=float, help="default: the one recorded at training time")
    evaluate.add_argument("--seed", type=int, help="default: the one recorded at training time")
    evaluate.add_argument("--output-json", help="also write the results to this JSON file")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "train":
        from training.train import make_config, train

        config = make_config(
            args.data_dir,
            args.output,
            args.preset,
            arch=args.arch,
            image_size=args.image_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            schedule=args.schedule,
            fine_tune_epochs=args.fine_tune_epochs,
            fine_tune_lr=args.fine_tune_lr,
            weights=args.weights,
            offline=args.offline,
            seed=args.seed,
            val_fraction=args.val_fraction,
            limit_per_class=args.limit_per_class,
            version=args.version,
            augment=args.augment,
            flip_tta=args.flip_tta,
        )
        train(config)
    else:
        from training.evaluate import evaluate_saved_model, format_metrics

        result = evaluate_saved_model(
            args.model,
            args.data_dir,
            split=args.split,
            limit=args.limit_per_class,
            val_fraction=args.val_fraction,
            seed=args.seed,
            output_json=args.output_json,
        )
        print(f"model {result['model_version']} on {result['split']} split of {result['data_dir']}")
        print(format_metrics(result["metrics"]))
        if args.output_json is None:
            print(json.dumps({k: result["metrics"][k] for k in ("accuracy", "log_loss", "roc_auc")}))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _run(args)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
