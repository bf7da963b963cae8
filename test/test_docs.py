"""The documentation a newcomer reads: every relative link and anchor resolves, the README stays a front door,
and its code blocks marked runnable run as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```")
RUNNABLE = "<!-- runnable -->"


def markdown_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "runs", "demo_out"}
    return sorted(p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts))


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (links there are examples, not links)."""
    out, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    for line in prose(path.read_text()).splitlines():
        match = re.match(r"^#{1,6} (.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no such heading)")
    return broken


def test_every_relative_link_and_anchor_in_the_documentation_resolves():
    files = markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "ros_api.md" in files
    broken = {str(p.relative_to(ROOT)): b for p in files if (b := broken_links(p))}
    assert not broken, broken


def test_the_checker_finds_a_broken_link_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A heading, with punctuation\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading-with-punctuation) [bad](missing.md) [gone](other.md#nope)\n"
                    "```\n[example](not/checked.md)\n```\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nope (no such heading)"]


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for doc in ("docs/ros_api.md", "docs/training.md", "docs/weights.md", "CONTRIBUTING.md"):
        assert f"]({doc}" in readme, f"README does not link {doc}"


def runnable_blocks(text: str) -> list[str]:
    """The fenced code blocks that follow a ``<!-- runnable -->`` line."""
    blocks, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == RUNNABLE:
            start = i + 1
            assert lines[start].startswith("```python"), f"line {start + 1}: a runnable block must be python"
            end = next(j for j in range(start + 1, len(lines)) if FENCE.match(lines[j].strip()))
            blocks.append("\n".join(lines[start + 1:end]))
    return blocks


@pytest.mark.parametrize("page", ["README.md", "docs/python.md"])
def test_the_python_examples_marked_runnable_run_as_written(page, tmp_path):
    blocks = runnable_blocks((ROOT / page).read_text())
    assert blocks, f"{page} has no runnable example"
    for block in blocks:
        result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
