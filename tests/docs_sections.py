"""The text of one section of README.md or a docs/ page, for tests that check what the docs say.

A section runs from its heading to the next heading of the same or a higher level (`#` lines inside
fenced code blocks are not headings)."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"

_HEADING = re.compile(r"^(#{1,6}) +(.*?) *$")


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every heading outside fenced code blocks."""
    found = []
    fenced = False
    for index, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            found.append((index, len(match.group(1)), match.group(2)))
    return found


def section(path: Path, title: str) -> str:
    """The section of `path` headed `title` (any level), heading line included."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    marks = headings(text)
    for position, (start, level, name) in enumerate(marks):
        if name == title:
            end = next((i for i, lvl, _ in marks[position + 1 :] if lvl <= level), len(lines))
            return "".join(lines[start:end])
    raise AssertionError(f"{path.relative_to(REPO_ROOT)} has no section {title!r}")
