"""No set-up script pipes a command into a reader that may exit before the end.

Under `set -o pipefail`, `producer | grep -q PATTERN` and `producer | head` fail whenever the reader exits
before the producer has written everything (the producer dies of SIGPIPE, status 141): a match can read as
a failure, depending on timing (tests/service/test_scripts.py reproduces it with a stub apt-cache)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHELL_SCRIPTS = sorted(
    [*REPO_ROOT.glob("scripts/*.sh"), *REPO_ROOT.glob("docker/*.sh"), REPO_ROOT / ".ci" / "run"]
)

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
