"""The answers shown in README.md and docs/, from the service as it serves by default.

Examples, validation and non-pet figures, and the runtimes table:

    .venv/bin/python -m benchmarks.answers            # print the blocks
    .venv/bin/python -m benchmarks.answers --write    # and replace them where they sit
    .venv/bin/python -m benchmarks.answers --where    # only say which file holds each block

Starts `python -m app serve` with the committed model and `CATDOG_RUNTIME=auto` on loopback, so every
figure comes from the runtime that serves by default, through HTTP: one validation cat photo and
scikit-image's coffee cup as examples, all 1000 validation photos and the real non-pet photos
(training/nonpets.py) through /predict/batch. The runtimes table is metadata.json's `derived` list:
what each derived model kept of the SavedModel's answers (the gate) and its speed at derive time.
Each block sits between `<!-- answers:NAME -->` and `<!-- /answers:NAME -->` in exactly one of README.md
and docs/*.md (example: README.md; v2, tfserving: docs/protocols.md; figures: docs/training.md;
runtimes: docs/runtimes.md). The files are checked before the service starts.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np

try:
    from benchmarks.common import REPO_ROOT, start_service
except ModuleNotFoundError as error:
    raise SystemExit("run it from the repo root as: python -m benchmarks.answers") from error

from catdog.contract import read_metadata
from training.metrics import accuracy, log_loss
from training.nonpets import build_non_pets, read_set

DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
MODEL_DIR = REPO_ROOT / "model" / "default"
DOC_FILES = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
BLOCKS = ("example", "v2", "tfserving", "figures", "runtimes")
EXAMPLE = DATA_DIR / "validation" / "cats" / "cat.2000.jpg"
EXAMPLE_DOG = DATA_DIR / "validation" / "dogs" / "dog.2000.jpg"
TF_PREDICT = "/v1/models/catdog:predict"
EXAMPLE_NON_PET = "coffee.png"
BATCH = 32


def batch_answers(base_url: str, photos: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for start in range(0, len(photos), BATCH):
            files = [("files", (name, data, "image/jpeg")) for name, data in photos[start : start + BATCH]]
            response = client.post("/predict/batch", files=files)
            response.raise_for_status()
            answers += response.json()["predictions"]
    return answers


def collect(base_url: str) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, timeout=300) as client:
        ready = client.get("/readyz").json()
        example = client.post("/predict", files={"file": (EXAMPLE.name, EXAMPLE.read_bytes(), "image/jpeg")})
        cat, dog = (base64.b64encode(path.read_bytes()).decode() for path in (EXAMPLE, EXAMPLE_DOG))
        v2_body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [cat]}]}
        protocols = {
            "v2": client.post("/v2/models/catdog/infer", json=v2_body).text,
            "tf_rows": client.post(TF_PREDICT, json={"instances": [{"b64": cat}, {"b64": dog}]}).text,
            "tf_columns": client.post(TF_PREDICT, json={"inputs": {"image_bytes": [{"b64": dog}]}}).text,
            "tf_missing": client.post("/v1/models/half:predict", json={"instances": [1.0, 2.0, 5.0]}).text,
        }
        non_pets = read_set(build_non_pets(), "non-pets")
        coffee = client.post(
            "/predict", files={"file": (EXAMPLE_NON_PET, non_pets[EXAMPLE_NON_PET], "image/png")}
        ).json()
    validation = sorted((DATA_DIR / "validation").glob("*/*.jpg"))
    labels = np.array([0 if path.parent.name == "cats" else 1 for path in validation])
    answers = batch_answers(base_url, [(path.name, path.read_bytes()) for path in validation])
    p_dog = np.array([answer["probabilities"]["dog"] for answer in answers])
    flagged = [
        path.name for path, answer in zip(validation, answers, strict=True) if not answer["is_cat_or_dog"]
    ]
    non_pet_answers = batch_answers(base_url, list(non_pets.items()))
    passed = [name for name, answer in zip(non_pets, non_pet_answers, strict=True) if answer["is_cat_or_dog"]]
    return {
        "ready": ready,
        "protocols": protocols,
        "example": example.json(),
        "coffee": coffee,
        "validation": {
            "photos": len(labels),
            "accuracy": accuracy(labels, p_dog),
            "log_loss": log_loss(labels, p_dog),
            "errors": [p.name for p, y, p_ in zip(validation, labels, p_dog, strict=True) if (p_ > 0.5) != y],
            "flagged": flagged,
        },
        "non_pets": {"photos": len(non_pets), "passed": passed},
    }


def example_block(figures: dict[str, Any]) -> str:
    example = {key: value for key, value in figures["example"].items() if key not in ("latency_ms", "timing")}
    coffee = figures["coffee"]
    return "\n".join(
        [
            "```json",
            json.dumps(example),
            "```",
            "",
            f"That is `validation/cats/{EXAMPLE.name}` as `{figures['ready']['runtime']}` (what "
            "`CATDOG_RUNTIME=auto` serves here) answers it; scikit-image's coffee-cup photo gets "
            f'`"label": "{coffee["label"]}", "confidence": {coffee["confidence"]}, '
            f'"pet_score": {coffee["pet_score"]}, "is_cat_or_dog": {json.dumps(coffee["is_cat_or_dog"])}`.',
        ]
    )


def v2_block(figures: dict[str, Any]) -> str:
    answer = json.loads(figures["protocols"]["v2"])
    outputs = ",\n ".join(json.dumps(output, separators=(",", ":")) for output in answer["outputs"])
    head = {key: value for key, value in answer.items() if key != "outputs"}
    return (
        "```json\n" + json.dumps(head, separators=(",", ":"))[:-1] + ',"outputs":[\n ' + outputs + "]}\n```"
    )


def tfserving_block(figures: dict[str, Any]) -> str:
    answers = figures["protocols"]
    return "\n".join(
        [
            "```",
            answers["tf_rows"],
            answers["tf_columns"],
            f"{answers['tf_missing']}      (HTTP 404)",
            "```",
        ]
    )


def figures_block(figures: dict[str, Any], metadata: Any) -> str:
    v, n = figures["validation"], figures["non_pets"]
    cv = (metadata.model_extra or {}).get("cross_validation", {})
    ready = figures["ready"]
    lines = [
        f"As served by `{ready['runtime']}` (pet threshold {ready['pet_threshold']:.4f}, "
        f"`{ready['pet_threshold_source']}`), through HTTP:",
        "",
        "| photos | figure |",
        "|---|---|",
    ]
    if cv:
        acc, loss = cv["accuracy"], cv["log_loss"]
        lines.append(
            f"| all 3000 labelled photos, out of fold ({cv['repeats']} x {cv['folds']}-fold "
            f"cross-validation) | accuracy {100 * acc['mean']:.2f}% [{100 * acc['low']:.2f}, "
            f"{100 * acc['high']:.2f}], log loss {loss['mean']:.4f} [{loss['low']:.4f}, "
            f"{loss['high']:.4f}], ECE {cv['ece']:.4f} |"
        )
    lines += [
        f"| the {v['photos']} validation photos (fitted on: in-sample) | accuracy "
        f"{100 * v['accuracy']:.2f}%, log loss {v['log_loss']:.4f}, {len(v['errors'])} wrong |",
        f"| the {v['photos']} validation pets flagged as not a cat or dog | "
        f"{_listed(v['flagged'], v['photos'])} |",
        f"| the {n['photos']} real non-pet photos passed as pets | {_listed(n['passed'], n['photos'])} |",
    ]
    return "\n".join(lines)


def _listed(names: list[str], total: int) -> str:
    share = f"{len(names)} ({100 * len(names) / total:.1f}%)"
    return f"{share}: {', '.join(names)}" if names else share


def runtimes_block(metadata: Any) -> str:
    lines = [
        "| runtime | gate | accuracy | labels changed | log loss vs SavedModel | max \\|ΔP(cat)\\| "
        "| pet flags changed | pet threshold | batch-1 ms | speed vs TensorFlow |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    tensorflow = next((entry.speed["tensorflow"] for entry in metadata.derived if entry.speed), None)
    if tensorflow is not None and metadata.ood is not None:
        lines.append(
            f"| tensorflow-fp32 (the SavedModel) | reference | | | | | | {metadata.ood.threshold:.4f} | "
            f"{tensorflow['batch1_ms']:.1f} | 1.00x |"
        )
    for entry in metadata.derived:
        e = entry.equivalence
        if not e:
            lines.append(f"| {entry.key} | not checked: {entry.reason} | | | | | | | | |")
            continue
        gate = "passed" if entry.passed else f"failed: {entry.reason}"
        speed = f"{entry.speed['batch1_ms']:.1f} | {entry.speedup:.2f}x" if entry.speed else "- | -"
        threshold = "-" if entry.ood_threshold is None else f"{entry.ood_threshold:.4f}"
        lines.append(
            f"| {entry.key} | {gate} | {100 * e['accuracy']:.1f}% | {e['class_disagreements']} | "
            f"{e['log_loss'] - e['reference_log_loss']:+.4f} | {e['max_abs_diff_probabilities']:.2g} | "
            f"{e.get('pet_flag_disagreements', '-')} | {threshold} | {speed} |"
        )
    return "\n".join(lines)


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- answers:{name} -->\n)(?:.*?\n)?(<!-- /answers:{name} -->)", re.DOTALL)


def block_files(names: tuple[str, ...] = BLOCKS) -> dict[str, Path]:
    """The file that holds each block: exactly one of README.md and docs/*.md."""
    found: dict[str, Path] = {}
    for name in names:
        holders = [path for path in DOC_FILES if _pattern(name).search(path.read_text(encoding="utf-8"))]
        if len(holders) != 1:
            where = ", ".join(str(path.relative_to(REPO_ROOT)) for path in holders) or "none of them"
            raise SystemExit(
                f"<!-- answers:{name} --> must sit in exactly one of README.md and docs/*.md, not in {where}"
            )
        found[name] = holders[0]
    return found


def replace_block(text: str, name: str, block: str) -> str:
    pattern = _pattern(name)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- answers:{name} --> block")
    return pattern.sub(lambda match: match.group(1) + block + "\n" + match.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the blocks in README.md and docs/")
    parser.add_argument("--where", action="store_true", help="only print which file holds each block")
    args = parser.parse_args(argv)
    files = block_files()
    if args.where:
        for name, path in files.items():
            print(f"{name}: {path.relative_to(REPO_ROOT)}")
        return 0
    metadata = read_metadata(MODEL_DIR)
    server, base_url = start_service(MODEL_DIR)
    try:
        figures = collect(base_url)
    finally:
        server.terminate()
        server.wait(timeout=60)
    blocks = {
        "example": example_block(figures),
        "v2": v2_block(figures),
        "tfserving": tfserving_block(figures),
        "figures": figures_block(figures, metadata),
        "runtimes": runtimes_block(metadata),
    }
    for name, block in blocks.items():
        print(f"<!-- answers:{name} -->\n{block}\n")
    if args.write:
        for path in dict.fromkeys(files.values()):
            text = path.read_text(encoding="utf-8")
            for name, block in blocks.items():
                if files[name] == path:
                    text = replace_block(text, name, block)
            path.write_text(text, encoding="utf-8")
            print(f"{path.relative_to(REPO_ROOT)} updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
