"""docs/METHOD.md's line anchors stay right: every link to a line of the code carries, as its title, the
text that line holds, e.g. [`engine.py` L193](../pipeline/method/engine.py#L193 "def _plan_anchor_rows").
When the code moves, this test says where each line went."""

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


def test_section_links_exist():
    doc = DOC.read_text(encoding="utf-8")
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", doc, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    missing = [a for a in re.findall(r"\]\(#([^)]+)\)", doc) if a not in anchors]
    assert not missing, missing
