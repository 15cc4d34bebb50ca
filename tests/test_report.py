"""`pix2video report`: every file the page references exists, and headless Chromium renders it.

Needs Debian's `chromium` (apt-get install -y chromium). The test does not skip itself without it:
the project's test command installs it, and a report nobody checked in a browser is not tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fake_run import FRAMES, make_run
from PIL import Image

from jobs.cli import main


class _Refs(HTMLParser):
    """Every src/href and every id of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)
            if name == "id" and value:
                self.ids.add(value)


def _refs(page: Path) -> _Refs:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is needed for this test: apt-get install -y chromium"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    make_run(out)
    assert main(["report", str(out), "--metrics", "--clip-model", "tiny", "--no-progress"]) == 0
    return out / "report" / "index.html"


def test_every_referenced_file_exists(report):
    refs = _refs(report)
    files = [r for r in refs.refs if not r.startswith("#")]
    anchors = [r[1:] for r in refs.refs if r.startswith("#")]
    assert files and anchors
    for ref in files:
        assert "://" not in ref and not os.path.isabs(ref), f"{ref}: links must be relative"
        assert (report.parent / ref).is_file(), f"{ref} is referenced but missing"
    assert set(anchors) <= refs.ids
    previews = [r for r in files if r.endswith(".gif")]
    plots = [r for r in files if r.endswith(".png")]
    assert len(previews) == 2 and len(plots) == 2  # the two ok clips; the failed one has no output
    with Image.open(report.parent / previews[0]) as gif:
        assert gif.n_frames == FRAMES and gif.is_animated
        assert gif.size[0] > 2 * gif.size[1] - 10  # input and edit side by side
    with Image.open(report.parent / plots[0]) as png:
        assert png.format == "PNG" and np.asarray(png.convert("L")).std() > 5


def test_the_page_says_what_tiny_values_mean(report):
    text = report.read_text(encoding="utf-8")
    assert "noise-like pictures" in text and "meaningless" in text
    assert "RuntimeError: out of memory" in text  # the failed row's reason is shown


def test_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,900", report.resolve().as_uri(), tmp=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1200)
    non_white = (pixels < 240).any(axis=-1).mean()
    assert non_white > 0.02, "the screenshot is (nearly) blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables and pictures, not a flat page

    dom = _chromium("--dump-dom", report.resolve().as_uri(), tmp=tmp_path).stdout
    assert '<table id="clips">' in dom and '<table id="metrics-summary">' in dom
    clips_table = dom.split('<table id="clips">', 1)[1].split("</table>", 1)[0]
    assert clips_table.count("<tr>") == 4  # header + three clips
    for prompt in ("a red car", "a dog in the snow", "van gogh painting"):
        assert prompt in clips_table


def test_report_without_metrics_shows_dashes(tmp_path, capsys):
    out = tmp_path / "run"
    make_run(out)
    assert main(["report", str(out), "--no-progress", "--report-dir", str(tmp_path / "page")]) == 0
    page = tmp_path / "page" / "index.html"
    assert str(page.resolve()) in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert "No metrics yet" in text and "—" in text
    refs = [r for r in _refs(page).refs if not r.startswith("#")]
    assert not [r for r in refs if r.endswith(".png")]  # no plots without metrics
    for ref in refs:
        assert (page.parent / ref).is_file(), ref


def test_report_refuses_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results table" in capsys.readouterr().err
