"""The `catdog` command: predict against a live server (table, JSON lines, folders, errors, progress),
and serve/train handing over to `python -m app` / `python -m training`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

from app.main import create_app
from app.settings import Settings
from catdog import cli
from tests.conftest import REPO_ROOT, real_photos
from tests.images import blue_jpeg, red_png, solid
from tests.servers import free_port, uvicorn_in_thread


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    with uvicorn_in_thread(create_app(Settings(model_dir=tiny_model_dir, auto_train=False))) as base_url:
        yield base_url


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder: red.png (cat), nested/blue.jpg (dog), notes.txt (not an image: skipped)."""
    (tmp_path / "nested").mkdir()
    (tmp_path / "red.png").write_bytes(red_png())
    (tmp_path / "nested" / "blue.jpg").write_bytes(blue_jpeg())
    (tmp_path / "notes.txt").write_text("not a photo")
    return tmp_path


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: the installed console script when there is one."""
    script = Path(sys.executable).parent / "catdog"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "catdog.cli"]
    return subprocess.run(
        [*command, *args], check=False, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )


def test_console_script_is_declared() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["catdog"] == "catdog.cli:main"


def test_predict_json_lines_for_a_folder(server: str, photos: Path) -> None:
    result = run_cli(["predict", str(photos), "--url", server, "--json"])
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(line["file"]).name, line["label"]) for line in lines] == [
        ("blue.jpg", "dog"),
        ("red.png", "cat"),
    ]
    assert set(lines[0]["probabilities"]) == {"cat", "dog"}
    assert lines[0]["model_version"] == "tiny-test-1"


def test_predict_table(server: str, photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["predict", str(photos / "red.png"), str(photos / "nested"), "--url", server])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if "red.png" in line or "blue.jpg" in line]
    assert len(rows) == 2
    assert "cat" in rows[0] and "dog" in rows[1]
    assert "P(cat)" in out and "P(dog)" in out


def test_bad_files_are_reported_and_exit_1(
    server: str, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    code = cli.main(["predict", str(photos), str(photos / "missing.png"), "--url", server, "--json"])
    captured = capsys.readouterr()
    assert code == 1
    lines = {Path(line["file"]).name: line for line in map(json.loads, captured.out.splitlines())}
    assert lines["broken.jpg"]["error"]["code"] == "undecodable_image"
    assert lines["broken.jpg"]["error"]["status"] == 400
    assert lines["red.png"]["label"] == "cat"
    assert "no such file or folder" in captured.err and "missing.png" in captured.err


def test_progress_bar_and_concurrency(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(12):
        (tmp_path / f"{index:02d}.png").write_bytes(red_png() if index % 2 else blue_jpeg())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar is drawn
    code = cli.main(["predict", str(tmp_path), "--url", server, "--json", "--concurrency", "6"])
    captured = capsys.readouterr()
    assert code == 0
    labels = [json.loads(line)["label"] for line in captured.out.splitlines()]
    assert labels == ["dog", "cat"] * 6, "answers come back in the files' order"
    assert "classifying" in captured.err and "12/12" in captured.err


def test_unreachable_service_and_usage_errors(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["predict", str(photos / "red.png"), "--url", url, "--timeout", "2"]) == 2
    assert "cannot reach the service" in capsys.readouterr().err
    assert cli.main(["predict", str(photos / "notes.txt").replace("notes.txt", "nothing-here")]) == 2
    with pytest.raises(SystemExit) as caught:
        cli.main(["predict", "x.jpg", "--concurrency", "0"])
    assert caught.value.code == 2


def test_url_from_the_environment(server: str, photos: Path) -> None:
    script = Path(sys.executable).parent / "catdog"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "catdog.cli"]
    env = {**os.environ, "CATDOG_URL": server}
    result = subprocess.run(
        [*command, "predict", str(photos / "red.png"), "--json"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] == "cat"


def test_real_photos(default_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    photos = real_photos(per_class=2)
    code = cli.main(["predict", *(str(path) for path, _ in photos), "--url", default_server, "--json"])
    assert code == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [answer["label"] for answer in answers] == [label for _, label in photos]
    assert all(answer["is_cat_or_dog"] for answer in answers)


@pytest.mark.parametrize(
    ("command", "usage"), [("serve", "python -m app serve"), ("train", "python -m training train")]
)
def test_serve_and_train_hand_over(command: str, usage: str) -> None:
    result = run_cli([command, "--help"])
    assert result.returncode == 0, result.stderr
    assert usage in result.stdout


def test_serve_passes_its_arguments_on() -> None:
    # A bad flag reaches `python -m app serve`, whose argparse refuses it with its own usage line.
    result = run_cli(["serve", "--no-such-flag"])
    assert result.returncode == 2
    assert "python -m app" in result.stderr
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_table_never_shows_certainty_and_leads_with_the_pet_flag(
    tiny_pet_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pure red is a cat at P = 1 - 4.5e-5 by the tiny model's weights: shown as >0.9999, not 1.0000.
    A dark photo is flagged by the pet head: its label column says so, as the web page does."""
    (tmp_path / "red.png").write_bytes(solid((255, 0, 0)))
    (tmp_path / "dark.png").write_bytes(solid((40, 10, 10)))
    app = create_app(Settings(model_dir=tiny_pet_model_dir, auto_train=False))
    with uvicorn_in_thread(app) as base_url:
        code = cli.main(["predict", str(tmp_path / "red.png"), str(tmp_path / "dark.png"), "--url", base_url])
    out = capsys.readouterr().out
    assert code == 0
    red = next(line for line in out.splitlines() if "red.png" in line)
    dark = next(line for line in out.splitlines() if "dark.png" in line)
    assert ">0.9999" in red and "<0.0001" in red and "1.0000" not in red and "0.0000" not in red
    assert "not a cat or dog" in dark and "not a cat or dog" not in red


@pytest.mark.parametrize(
    ("p", "shown"),
    [(0.999999, ">0.9999"), (0.99995, ">0.9999"), (0.99994, "0.9999"), (0.5, "0.5000"), (4e-5, "<0.0001")],
)
def test_probability_text(p: float, shown: str) -> None:
    assert cli.probability(p) == shown
