"""docs/METHOD.md's line anchors stay right: every link to a line of the code carries, as its title, the
text that line holds, e.g. [`engine.py` L193](../pipeline/method/engine.py#L193 "def _plan_anchor_rows").
When the code moves, this test says where each line went. And every section link between the
project's Markdown documents names a heading that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "METHOD.md"
LINK = re.compile(r"\]\(\.\./([^)#\s]+)#L(\d+)(?:\s+\"([^\"]*)\")?\)")


def test_every_line_anchor_points_at_its_text():
    links = LINK.findall(DOC.read_text(encoding="utf-8"))
    assert links, "docs/METHOD.md has no line anchors"
    wrong = []
    for path, number, text in links:
        assert text, f"docs/METHOD.md: the link to {path}#L{number} needs a title: the text of that line"
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
        if int(number) > len(lines) or text not in lines[int(number) - 1]:
            now = [i + 1 for i, line in enumerate(lines) if text in line]
            wrong.append(f"{path}#L{number} {text!r}: now at {', '.join(f'L{n}' for n in now) or 'no line'}")
    assert not wrong, "docs/METHOD.md line anchors out of date:\n" + "\n".join(wrong)


def _sections(doc: Path) -> set[str]:
    """The anchors a Markdown renderer gives the headings of `doc` (GitHub's rule: lower case, spaces
    to hyphens, other punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_section_links_exist():
    """Every `[..](#section)` and `[..](OTHER.md#section)` in the README, BENCHMARKS.md and docs/ names
    a heading that is there: a renamed heading breaks the links to it silently otherwise."""
    missing = []
    for doc in (ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))):
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if anchor.startswith("L") and anchor[1:].isdigit():
                continue  # a line of code: test_every_line_anchor_points_at_its_text
            other = (doc.parent / target).resolve() if target else doc
            if other.suffix == ".md" and (not other.exists() or anchor not in _sections(other)):
                missing.append(f"{doc.relative_to(ROOT)}: {target}#{anchor}")
    assert not missing, missing
