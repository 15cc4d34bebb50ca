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


def test_control_characters_from_an_id_never_reach_the_page(tmp_path):
    """Issue 8 item 13: a NUL, an ESC sequence or another control character in an id (or a prompt, an
    error) is dropped; markup in it is escaped (the page is a Jinja2 template with autoescape)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "run"
    make_run(out)
    table = pq.read_table(out / "results.parquet")
    ids = ["car\x00\x1b[31m<b>red</b>\x07", "b\x7fdel\x9bcsi", "b"]
    table = table.set_column(table.column_names.index("id"), "id", pa.array(ids, pa.string()))
    errors = [None, None, "RuntimeError: out\x00of memory\x0c"]
    table = table.set_column(table.column_names.index("error"), "error", pa.array(errors, pa.string()))
    pq.write_table(table, out / "results.parquet")
    assert main(["report", str(out), "--no-progress"]) == 0
    page = (out / "report" / "index.html").read_bytes().decode("utf-8")
    controls = [c for c in page if (ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) <= 0x9F]
    assert controls == [], controls
    assert "car[31m&lt;b&gt;red&lt;/b&gt;" in page and "<b>red</b>" not in page
    assert "bdelcsi" in page and "RuntimeError: outof memory" in page


def test_report_refuses_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results table" in capsys.readouterr().err


def test_evaluate_and_report_on_s3(tmp_path, tiny_model_dir, capsys):
    """A run whose inputs and outputs live on s3:// (moto server on 127.0.0.1): metrics and the
    report's files are written back under OUTPUT/, and the page links stay relative."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint, key, secret = f"http://{host}:{port}", "testing-key-id", "testing-secret-value"
        fs = fsspec.filesystem("s3", endpoint_url=endpoint, key=key, secret=secret)
        fs.mkdir("bucket")
        local = tmp_path / "run"
        make_run(local)
        table = pq.read_table(local / "results.parquet")

        def upload(path: str | None) -> str | None:
            if path is None:
                return None
            url = "s3://bucket/" + Path(path).relative_to(tmp_path).as_posix()
            fs.put_file(path, url)
            return url

        for name in ("video", "output"):
            urls = [upload(p) for p in table.column(name).to_pylist()]
            table = table.set_column(table.column_names.index(name), name, pa.array(urls, pa.string()))
        with fs.open("bucket/run/results.parquet", "wb") as f:
            pq.write_table(table, f)

        remote = ["s3://bucket/run", "--endpoint-url", endpoint, f"--storage-option=key={key}"]
        remote += [f"--storage-option=secret={secret}", "--clip-model", "tiny", "--no-progress"]
        assert main(["evaluate", *remote]) == 0
        assert main(["report", *remote]) == 0
        assert "s3://bucket/run/report/index.html" in capsys.readouterr().out
        fs.invalidate_cache()
        assert len(fs.ls("bucket/run/metrics")) == 2
        rows = pq.read_table(pa.BufferReader(fs.cat_file("bucket/run/results.parquet"))).to_pylist()
        assert rows[0]["clip_text"] is not None and rows[2]["clip_text"] is None
        page = tmp_path / "index.html"
        page.write_bytes(fs.cat_file("bucket/run/report/index.html"))
        refs = [r for r in _refs(page).refs if not r.startswith("#")]
        assert len(refs) == 4  # two previews, two plots; outputs on s3 are not linked
        for ref in refs:
            assert fs.exists(f"bucket/run/report/{ref}"), ref
    finally:
        server.stop()
