"""The test tiers stay as docs/testing.md describes them: every test file sits in unit/, service/ or
system/ (a test file anywhere else would run in neither plain pytest nor scripts/test.sh, which name the
tier folders), plain pytest runs the two fast tiers, scripts/test.sh all three, and `slow` comes from the
folder (tests/conftest.py), never from a mark by hand."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS.parent
TIERS = ("unit", "service", "system")


def test_every_test_file_is_in_a_tier() -> None:
    misplaced = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in TESTS.rglob("test_*.py")
        if path.relative_to(TESTS).parts[0] not in TIERS
    )
    assert not misplaced, f"move these into tests/unit, tests/service or tests/system: {misplaced}"


def test_each_tier_is_a_package() -> None:
    # Packages, so test files in two tiers may share a name; tests/__init__.py makes `tests.` imports work.
    for folder in (TESTS, *(TESTS / tier for tier in TIERS)):
        assert (folder / "__init__.py").is_file(), folder


def test_plain_pytest_runs_the_fast_tiers_and_the_test_script_all_three() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(r'^testpaths = \["tests/unit", "tests/service"\]$', pyproject, re.MULTILINE)
    script = (REPO_ROOT / "scripts" / "test.sh").read_text()
    assert "tests/unit tests/service tests/system" in script


def test_slow_is_never_marked_by_hand() -> None:
    marked = sorted(
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in TESTS.rglob("test_*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bmark\.slow\b", line)
    )
    assert not marked, f"`slow` is the system tier: move these tests to tests/system instead: {marked}"
