"""Every startup failure of `python -m app serve`: one clear `catdog:` line and a documented exit code
(2 settings or model, 4 address; see app/__main__.py and docs/operations.md)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.servers import free_port
from tests.system.test_bootstrap_serve import serve


def one_line(output: str) -> str:
    assert "Traceback" not in output, output
    plain = [line for line in output.splitlines() if line.startswith("catdog: ")]
    assert len(plain) == 1, output
    return plain[0]


def test_busy_port_exits_4_before_the_model_loads(tiny_model_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = serve("--model-dir", str(tiny_model_dir), "--port", str(port), CATDOG_LOG_LEVEL="INFO")
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 4, output
    line = one_line(output)
    assert f"127.0.0.1:{port}" in line and "in use" in line
    assert "model loaded" not in output  # found before the seconds of loading, not after


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CATDOG_LOG_LEVEL": "LOUD"}, ["CATDOG_LOG_LEVEL", "LOUD"]),
        ({"CATDOG_MAX_QUEUE_SIZE": "8"}, ["CATDOG_MAX_QUEUE_SIZE (8)", "CATDOG_MAX_BATCH_SIZE (16)"]),
        ({"CATDOG_DECODE_MEMORY_BYTES": "10"}, ["CATDOG_DECODE_MEMORY_BYTES"]),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(
    tiny_model_dir: Path, env: dict[str, str], names: list[str]
) -> None:
    process = serve("--model-dir", str(tiny_model_dir), **env)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    line = one_line(output)
    for name in names:
        assert name in line
    assert "CATDOG_?" not in line


@pytest.mark.parametrize("damage", ["truncated-variables", "missing-variables", "garbage-saved-model"])
def test_broken_export_exits_2_with_one_line(tiny_model_dir: Path, tmp_path: Path, damage: str) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    data = model_dir / "variables" / "variables.data-00000-of-00001"
    if damage == "truncated-variables":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "missing-variables":
        shutil.rmtree(model_dir / "variables")
    else:
        (model_dir / "saved_model.pb").write_bytes(bytes(range(256)) * 20)
    process = serve("--model-dir", str(model_dir), "--port", str(free_port()), "--no-auto-train")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    line = one_line(output)
    assert str(model_dir) in line
    assert "Uvicorn running" not in output and "Started server process" not in output
