"""The README and docs/*.md stay true: every ```python block runs, every relative link and image
exists (and every #anchor names a heading), and the README stays short and opens with the two
set-up commands.

```py blocks are examples that need real weights or data; they are not run.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import REPO, SHARED

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200
SETUP_COMMANDS = ("make quickstart", "make test")

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HTML_IMAGE = re.compile(r"<img\s[^>]*src=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def fenced_blocks(text: str) -> List[Tuple[str, str, int]]:
    """(info string, body, first line number) of every fenced code block."""
    return [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text without fenced blocks and inline code, where links are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: Dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(text):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def python_blocks() -> List:
    params = []
    for page in PAGES:
        for info, body, line in fenced_blocks(page.read_text(encoding="utf-8")):
            if info == "python":
                name = f"{page.relative_to(REPO)}:{line}"
                params.append(pytest.param(body, name, id=name))
    return params


def test_pages_exist():
    assert (REPO / "README.md").is_file()
    names = {p.name for p in PAGES}
    for page in ("annotate.md", "evaluate.md", "rclicks.md", "train.md", "emc-click.md", "speed.md",
                 "parity.md", "layout.md"):
        assert page in names, f"docs/{page} is missing"


def test_readme_is_short_and_opens_with_the_setup_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    before = text[:text.index("```")] if "```" in text else text
    assert all(line.startswith("#") or not line.strip() for line in before.splitlines()), \
        "README.md must open with the set-up commands (only a title before them)"
    info, body, _ = fenced_blocks(text)[0]
    commands = [line.split("#")[0].strip() for line in body.splitlines() if line.split("#")[0].strip()]
    assert tuple(commands) == SETUP_COMMANDS, f"README.md's first block runs {commands}, not {SETUP_COMMANDS}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_images_exist(page: Path):
    text = prose(page.read_text(encoding="utf-8"))
    targets = LINK.findall(text) + HTML_IMAGE.findall(text)
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):      # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no {file})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_fence_parsing_and_slugs():
    text = "a [x](y.md) `[z](w.md)`\n```python\nprint(1)\n```\n```py\n[u](v.md)\n```\n"
    assert [(i, b) for i, b, _ in fenced_blocks(text)] == [("python", "print(1)\n"), ("py", "[u](v.md)\n")]
    assert LINK.findall(prose(text)) == ["y.md"]
    assert slug("Faster: batches of instances, processes per GPU") == "faster-batches-of-instances-processes-per-gpu"
    assert slug("Speed beside `SkipClick`") == "speed-beside-skipclick"


@pytest.mark.parametrize("code, name", python_blocks())
def test_python_example_runs(code: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIPCLICK_SHARED", str(SHARED))
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})
