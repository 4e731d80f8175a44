"""The set-up scripts' checks give the same answer however fast the processes they run are.

Under `set -o pipefail`, `producer | grep -q PATTERN` and `producer | head` fail whenever the reader exits
before the producer has written everything (the producer dies of SIGPIPE, status 141): a match can read as
a failure, depending on timing and on how long the producer's output is."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
APT_HAS = REPO_ROOT / "scripts" / "apt-has.sh"
SHELL_SCRIPTS = sorted(
    [*REPO_ROOT.glob("scripts/*.sh"), *REPO_ROOT.glob("docker/*.sh"), REPO_ROOT / ".ci" / "run"]
)
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


# A command's output piped into a reader that may stop before the end.
EARLY_EXIT_PIPE = re.compile(r"\|\s*(grep\s+(-[a-zA-Z]*q|--quiet)|head\b|grep\s+-m)")


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_script_pipes_into_a_reader_that_exits_early(script: Path) -> None:
    text = script.read_text()
    assert "pipefail" in text, f"{script.name}: every set-up script runs with set -euo pipefail"
    offending = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if not line.lstrip().startswith("#") and EARLY_EXIT_PIPE.search(line)
    ]
    assert not offending, "read the whole output, then match (SIGPIPE under pipefail):\n" + "\n".join(
        offending
    )


def test_the_early_exit_check_finds_the_old_forms() -> None:
    for line in (
        "apt-cache policy x | grep -q 'Candidate'",
        "docker history x | grep --quiet mark",
        "find . | sort | head -n1",
        "awk '{print}' f | grep -m1 debian",
    ):
        assert EARLY_EXIT_PIPE.search(line), line
    assert not EARLY_EXIT_PIPE.search("grep -q x file")
