"""The project explains itself: every link in its Markdown points at a file inside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=False)
    files = [ROOT / f for f in listed.stdout.split()] if listed.returncode == 0 else []
    return files or sorted(p for p in ROOT.rglob("*.md") if ".venv" not in p.parts)


def local_links(text: str) -> list[str]:
    """Link targets that are paths (web addresses and in-page anchors aside), without their #anchor."""
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    for target in local_links(doc.read_text()):
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name} links {target}, outside the repository"
        assert path.exists(), f"{doc.name} links {target}, which does not exist"


def test_no_doc_or_comment_points_outside_the_repository() -> None:
    for path in [*markdown_files(), *ROOT.glob("testbed/*.py"), *ROOT.glob("conf/**/*.yaml")]:
        assert "shared/RESEARCH.md" not in path.read_text() and "RESEARCH.md" not in path.read_text(), path


def test_the_link_finder_finds_links() -> None:
    text = "see [a](docs/a.md#x), [b](https://example.org/b) and [c](#here)"
    assert local_links(text) == ["docs/a.md"]
