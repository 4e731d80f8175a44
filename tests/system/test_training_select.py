"""`python -m training select` on a small slice of the real photos: every candidate scored on the same
folds, compared with the incumbent fold by fold, the temperature measured, the pet signal's candidates
ranked, and the report written as JSON, Markdown and a reliability plot.

Lite0 at small input sizes over 40 photos keeps the run to seconds; features go to a temporary cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
if not DATA_DIR.is_dir():
    pytest.skip(f"no shared photos at {DATA_DIR}", allow_module_level=True)

INCUMBENT = "efficientnet_lite0@128:linear"
OTHERS = ("efficientnet_lite0@128:sqrt", "efficientnet_lite0@160:sqrt")


def _slice(root: Path, per_class: dict[str, int]) -> Path:
    """root/{train,validation}/{cats,dogs}: links to the first photos of the shared set."""
    for split, count in per_class.items():
        for folder in ("cats", "dogs"):
            (root / split / folder).mkdir(parents=True)
            for photo in sorted((DATA_DIR / split / folder).glob("*.jpg"))[:count]:
                (root / split / folder / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, non_pet_set: Path) -> Path:
    data = _slice(tmp_path_factory.mktemp("photos"), {"train": 12, "validation": 8})
    output = tmp_path_factory.mktemp("select")
    mp = pytest.MonkeyPatch()
    features = tmp_path_factory.mktemp("features")
    mp.setattr("training.features.cache_dir", lambda: features)
    try:
        code = main(
            [
                *("select", "--data-dir", str(data), "--output", str(output)),
                *("--candidates", ",".join((INCUMBENT, *OTHERS)), "--incumbent", INCUMBENT),
                *("--folds", "4", "--repeats", "2", "--temperature"),
            ]
        )
    finally:
        mp.undo()
    assert code == 0
    return output


def test_every_candidate_is_scored_on_the_same_folds(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    assert report["photos"] == 40 and report["folds"] == 4 and report["repeats"] == 2
    assert set(report["candidates"]) == {INCUMBENT, *OTHERS}
    for spec, result in report["candidates"].items():
        loss, acc = result["log_loss"], result["accuracy"]
        assert loss["low"] <= loss["mean"] <= loss["high"], spec
        assert acc["low"] <= acc["mean"] <= acc["high"], spec
        assert len(result["fold_log_loss"]) == 8
        # Lite0's ImageNet features tell cats from dogs even at 128 px and 30 fitted photos a fold.
        assert acc["mean"] >= 0.75, (spec, acc)
        assert result["C"] in (0.01, 0.03, 0.1, 0.3, 1.0)
    # Scored on the same folds: the incumbent against itself is a tie on every one of them.
    itself = report["candidates"][INCUMBENT]["vs_incumbent"]["log_loss"]
    assert itself["better"] == itself["worse"] == 0
    assert report["candidates"][INCUMBENT]["relative_compute"] == pytest.approx(407 / 899 * (128 / 224) ** 2)
    losses = {spec: result["log_loss"]["mean"] for spec, result in report["candidates"].items()}
    assert report["best"] == min(losses, key=losses.__getitem__)


def test_the_best_candidate_is_measured_with_a_temperature(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    temperature = report["temperature"]
    assert temperature["candidate"] == report["best"]
    assert 0.1 < temperature["temperature"]["median"] < 10
    wins = temperature["vs_uncalibrated"]
    assert wins["better"] + wins["worse"] <= 8


def test_the_pet_signal_candidates_are_ranked_by_the_stated_rule(report_dir: Path) -> None:
    pet = json.loads((report_dir / "report.json").read_text())["pet_signal"]
    assert pet["features"] == json.loads((report_dir / "report.json").read_text())["best"]
    assert pet["non_pets"] > 50
    names = {row["candidate"] for row in pet["rows"]}
    assert pet["chosen"] in names and len(names) >= 2
    chosen = next(row for row in pet["rows"] if row["candidate"] == pet["chosen"])
    assert all(chosen["non_pets_passed"] <= row["non_pets_passed"] for row in pet["rows"])


def test_the_report_is_written_for_people_too(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text()
    for spec in (INCUMBENT, *OTHERS):
        assert f"| {spec} |" in markdown
    assert "with a temperature fitted inside each training fold" in markdown
    assert "chosen by the rule:" in markdown
    assert (report_dir / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_transform_is_refused_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data-dir", str(DATA_DIR), "--output", str(tmp_path), "--candidates", "efficientnet_lite0:log"]
    code = main(["select", *args])
    assert code != 0
    assert "must be one of" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
