"""README.md and docs/: every relative link and #anchor resolves, the README keeps its two commands,
every answers block sits in one place, and the settings tables name only real settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings
from tests.docs_sections import DOCS, README, REPO_ROOT, headings, section

PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of `path` (lower case, punctuation dropped, spaces to dashes)."""
    found: set[str] = set()
    text = path.read_text(encoding="utf-8")
    for _, _, heading in headings(text):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.replace("`", ""))
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchor, n = slug, 1
        while anchor in found:
            anchor, n = f"{slug}-{n}", n + 1
        found.add(anchor)
    return found


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_docs_links_and_anchors_resolve(page: Path) -> None:
    dead = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        missing = not destination.exists()
        if missing or (anchor and (destination.suffix != ".md" or anchor not in anchors(destination))):
            dead.append(target)
    assert not dead, f"{page.relative_to(REPO_ROOT)}: dead links {dead}"


def test_docs_anchor_rules() -> None:
    """The anchor rules above, on headings with code, punctuation and a repeated title."""
    text = "# A `b`: c\n```\n# not a heading\n```\n## Is it a cat or dog at all?\n## A b c\n"
    page = REPO_ROOT / "docs" / "_anchor_rules.md"
    try:
        page.write_text(text, encoding="utf-8")
        assert anchors(page) == {"a-b-c", "is-it-a-cat-or-dog-at-all", "a-b-c-1"}
    finally:
        page.unlink(missing_ok=True)


def test_readme_keeps_its_two_commands() -> None:
    commands = section(README, "The two commands")
    for script in ("./scripts/serve.sh", "./scripts/test.sh"):
        assert f"\n{script} " in commands, f"README 'The two commands' lost {script}"
        assert (REPO_ROOT / script).is_file()


def test_every_answers_block_sits_in_one_page() -> None:
    from benchmarks.answers import BLOCKS, block_files

    assert block_files().keys() == set(BLOCKS)
    assert block_files()["example"] == README, "the short example answer belongs in the README"


def settings_rows(path: Path, title: str) -> dict[str, str]:
    """`CATDOG_*` variable -> its default as the table in that section shows it."""
    rows = {}
    for line in section(path, title).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `CATDOG_") and len(cells) >= 2:
            names = re.findall(r"`(CATDOG_[A-Z_]+)`", cells[0])
            defaults = [part.strip() for part in cells[1].split(" / ")]
            for i, name in enumerate(names):
                rows[name] = defaults[i] if len(defaults) == len(names) else cells[1]
    return rows


def test_settings_tables_name_real_settings() -> None:
    """Every variable in the settings tables (docs/operations.md, and the README's short one) is a
    Settings field, and the README shows each
    with the default docs/operations.md shows."""
    real = {f"CATDOG_{name.upper()}" for name in Settings.model_fields}
    full = settings_rows(DOCS / "operations.md", "Settings")
    short = settings_rows(README, "Configuration")
    assert full and short
    assert not full.keys() - real, f"docs/operations.md documents no such setting: {full.keys() - real}"
    assert not short.keys() - full.keys(), f"not in docs/operations.md: {short.keys() - full.keys()}"
    assert {name: full[name] for name in short} == short, "README and docs/operations.md differ on a default"
