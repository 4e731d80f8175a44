"""The set-up scripts' checks give the same answer however fast the processes they run are.

Under `set -o pipefail`, `producer | grep -q PATTERN` and `producer | head` fail whenever the reader exits
before the producer has written everything (the producer dies of SIGPIPE, status 141): a match can read as
a failure, depending on timing and on how long the producer's output is. Here scripts/apt-has.sh runs
against a stub apt-cache; that no script has such a pipe: tests/unit/test_script_pipes.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APT_HAS = REPO_ROOT / "scripts" / "apt-has.sh"
# Output past a pipe's buffer (64 KiB on Linux): a reader that stops early leaves the writer blocked.
FILLER_LINES = 20_000


def _stub_apt_cache(bin_dir: Path, candidate: str, status: int = 0) -> None:
    """An apt-cache that answers `policy` like the real one, followed by ~1 MB of version table."""
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "apt-cache"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'echo "docker-compose:"\n'
        'echo "  Installed: (none)"\n'
        f'echo "  Candidate: {candidate}"\n'
        f"for i in $(seq 1 {FILLER_LINES}); do\n"
        '  echo "     1.29.2-$i 500 http://deb.debian.org/debian bookworm/main amd64 Packages"\n'
        "done\n"
        f"exit {status}\n"
    )
    stub.chmod(0o755)


def _apt_has(bin_dir: Path, package: str = "docker-compose") -> int:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(APT_HAS), package], env=env, check=False, timeout=60).returncode


def test_apt_has_answers_yes_every_time_for_a_long_answer(tmp_path: Path) -> None:
    _stub_apt_cache(tmp_path / "bin", "1.29.2-3")
    answers = [_apt_has(tmp_path / "bin") for _ in range(30)]
    assert answers == [0] * 30


def test_the_old_pipeline_would_have_failed_this_test(tmp_path: Path) -> None:
    """The stub does reproduce the race: `apt-cache policy | grep -q` under pipefail says no."""
    _stub_apt_cache(tmp_path / "bin", "1.29.2-3")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    old = "set -o pipefail; apt-cache policy docker-compose 2>/dev/null | grep -q 'Candidate: [0-9]'"
    answers = [subprocess.run(["bash", "-c", old], env=env, check=False).returncode for _ in range(10)]
    assert 1 in answers or 141 in answers


@pytest.mark.parametrize(("candidate", "status"), [("(none)", 0), ("1.29.2-3", 100)])
def test_apt_has_answers_no_without_a_candidate(tmp_path: Path, candidate: str, status: int) -> None:
    _stub_apt_cache(tmp_path / "bin", candidate, status)
    assert _apt_has(tmp_path / "bin") == 1


def test_apt_has_answers_no_for_an_unknown_package(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-cache").write_text("#!/bin/sh\nexit 0\n")  # the real one prints nothing here
    (bin_dir / "apt-cache").chmod(0o755)
    assert _apt_has(bin_dir) == 1
