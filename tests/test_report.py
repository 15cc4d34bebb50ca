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


# ---------------------------------------------------------------------------------------------------
# --baseline: two runs of one manifest side by side (pipeline/report/compare.py). No Ray: the Pixel-MSE
# columns are written into the fake runs' tables, as `run --metrics` would have.
# ---------------------------------------------------------------------------------------------------


def _with_pixel_mse(output: Path, values: list[float | None]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(output / "results.parquet")
    column = pa.array(values, pa.float64())
    if "pixel_mse" in table.column_names:
        table = table.set_column(table.column_names.index("pixel_mse"), "pixel_mse", column)
    else:
        table = table.append_column("pixel_mse", column)
    pq.write_table(table, output / "results.parquet")


def _two_runs(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """This run (fake_run's edits) and a baseline of the same clips and prompts whose edit of clip 'a'
    is the input itself with frame 1 replaced by noise: a flickering per-frame edit."""
    from pipeline.io.video import write_video

    run, base = tmp_path / "edits", tmp_path / "per-frame"
    frames = make_run(run)
    make_run(base)
    flicker = frames["a"].copy()
    flicker[1] = np.random.default_rng(1).integers(0, 256, flicker[1].shape, dtype=np.uint8)
    write_video(base / "videos" / "a__a-red-car.mp4", flicker, 8.0)
    _with_pixel_mse(run, [10.0, 20.0, None])
    _with_pixel_mse(base, [30.0, 50.0, None])
    return run, base, {**frames, "flicker": flicker}


def _cells(table: str, row_id: str) -> list[str]:
    """The numeric cells of the row `row_id` of a page's table."""
    row = table.split(f'<tr id="{row_id}">', 1)[1].split("</tr>", 1)[0]
    return [cell.split("</td>", 1)[0] for cell in row.split('<td class="num">')[1:]]


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_baseline_shows_both_runs_in_step(tmp_path):
    from pipeline.io.video import read_frames

    run, base, frames = _two_runs(tmp_path)
    argv = ["report", str(run), "--baseline", str(base), "--baseline-label", "per-frame", "--no-progress"]
    assert main(argv) == 0
    page = run / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    refs = [r for r in _refs(page).refs if not r.startswith("#")]
    for ref in refs:
        assert (page.parent / ref).is_file(), ref
    # The two clips both runs edited: an animation and a strip each instead of the input | edit GIF.
    animations = [r for r in refs if r.endswith(".webp")]
    strips = [r for r in refs if r.endswith("-strip.png")]
    assert text.count('class="animation"') == 2 and len(animations) == 2 and len(strips) == 2
    assert not [r for r in refs if r.endswith(".gif")]

    summary = text.split('id="flicker-summary"', 1)[1].split("</table>", 1)[0]
    assert "per-frame" in summary and "Pix2Video" in summary
    assert _cells(summary, "mean-pixel_mse") == ["40.00", "15.00"]  # means of (30, 50) and (10, 20)
    assert "over the 2 clips × prompts both runs scored" in summary
    assert _cells(summary, "steadier") == ["(reference)", "2 of 2"] and "flickers less than per-frame" in summary
    clip_a = text.split('id="clip-a__a-red-car"', 1)[1].split('class="clip"', 1)[0]
    assert "30.00" in clip_a and "10.00" in clip_a  # both runs' Pixel-MSE of this clip
    assert 'href="../../per-frame/videos/a__a-red-car.mp4"' in clip_a  # the baseline's video, relative

    # The animation: every frame holds input | baseline | this run, in that order, the same frame of each.
    anim = page.parent / next(r for r in animations if "a__a-red-car" in r)
    edit = read_frames(str(run / "videos" / "a__a-red-car.mp4")).frames
    baseline = read_frames(str(base / "videos" / "a__a-red-car.mp4")).frames
    with Image.open(anim) as webp:
        assert webp.format == "WEBP" and webp.n_frames == FRAMES and webp.is_animated
        shown = []
        for t in range(webp.n_frames):
            webp.seek(t)
            shown.append(np.asarray(webp.convert("RGB")))
    height, band, pitch = 192, 23, 192 + 6  # --preview-height 192; label band; panel + gap

    def small(image: np.ndarray) -> np.ndarray:  # 16x16 means: resampling differences average out
        return np.asarray(Image.fromarray(image).resize((16, 16), Image.BOX), dtype=np.float64)

    def panel(t: int, i: int) -> np.ndarray:
        return small(shown[t][band : band + height, i * pitch : i * pitch + height])

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - small(b)).mean())

    assert len({shown[t].tobytes() for t in range(FRAMES)}) == FRAMES  # it moves
    for t in range(FRAMES):
        assert diff(panel(t, 0), frames["a"][t]) < 6, t
        assert diff(panel(t, 1), baseline[t]) < 6, t
        assert diff(panel(t, 2), edit[t]) < 6, t
    assert diff(panel(0, 2), baseline[0]) > 60  # the panels really are different videos
    assert diff(panel(1, 1), frames["a"][1]) > 25  # the baseline's noisy frame, in its place

    # The strip: one row per panel, every frame of the 4 (8 columns fit them all).
    with Image.open(page.parent / strips[0]) as png:
        assert png.format == "PNG" and png.size[0] > 4 * 128 and png.size[1] > 3 * 128
    assert "every frame" in clip_a


def test_strip_frames_and_a_clip_only_this_run_edited(tmp_path):
    """A pair the baseline failed keeps the input | edit GIF; --strip-frames 2 shows one frame in 2."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run, base, _ = _two_runs(tmp_path)
    table = pq.read_table(base / "results.parquet")
    table = table.set_column(table.column_names.index("status"), "status", pa.array(["failed", "ok", "failed"]))
    pq.write_table(table, base / "results.parquet")
    assert main(["report", str(run), "--baseline", str(base), "--strip-frames", "2", "--no-progress"]) == 0
    page = run / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    refs = [r for r in _refs(page).refs if not r.startswith("#")]
    assert [r for r in refs if r.endswith(".gif")] == ["assets/a__a-red-car.gif"]
    assert [r for r in refs if r.endswith(".webp")] == ["assets/b__a-dog-in-the-snow-compare.webp"]
    assert "one frame in 2" in text
    assert "per-frame" in text.split('id="flicker-summary"', 1)[1]  # default label: the folder's name
    strip = page.parent / "assets" / "b__a-dog-in-the-snow-strip.png"
    with Image.open(strip) as png:
        two_columns = png.size
    assert main(["report", str(run), "--baseline", str(base), "--no-progress"]) == 0
    with Image.open(strip) as png:
        four_columns = png.size
    assert four_columns[1] == two_columns[1] and four_columns[0] > 1.5 * two_columns[0]


def test_baseline_labels_are_escaped(tmp_path):
    run, base, _ = _two_runs(tmp_path)
    label, base_label = "<script>alert(1)</script>", 'per-frame & "\x1b[31mraw\x00"'
    argv = ["report", str(run), "--baseline", str(base), "--no-progress"]
    assert main([*argv, "--label", label, "--baseline-label", base_label]) == 0
    text = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "per-frame &amp; &#34;[31mraw&#34;" in text
    assert "\x1b" not in text and "\x00" not in text
    assert main([*argv, "--label", "  "]) == 2


@pytest.mark.parametrize("case", ["not a run", "this run", "this run, spelled otherwise", "no shared pair"])
def test_a_wrong_baseline_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, case):
    import pyarrow as pa
    import pyarrow.parquet as pq

    run, base, _ = _two_runs(tmp_path)
    if case == "not a run":
        base = tmp_path / "empty"
        base.mkdir()
    elif case == "this run":
        base = run
    elif case == "this run, spelled otherwise":
        base = Path(f"{run}/../{run.name}/")
    else:
        table = pq.read_table(base / "results.parquet")
        prompts = pa.array(["another prompt"] * table.num_rows, pa.string())
        pq.write_table(
            table.set_column(table.column_names.index("prompt"), "prompt", prompts), base / "results.parquet"
        )
    before = _files(tmp_path)
    # --metrics too: the baseline is checked before anything is scored (and written back)
    argv = ["report", str(run), "--baseline", str(base), "--metrics", "--clip-model", "tiny", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: baseline" in err, err
    expected = {"not a run": "no results table", "no shared pair": "shares no clip and prompt"}
    assert expected.get(case, "is the run itself") in err
    assert _files(tmp_path) == before and not (run / "report").exists()


def test_metrics_scores_both_runs(tmp_path, tiny_model_dir):
    """`report --baseline --metrics` scores what neither run has scored yet (on Ray, like `evaluate`),
    so the flicker summary has both means."""
    import pyarrow.parquet as pq

    run, base = tmp_path / "edits", tmp_path / "per-frame"
    make_run(run)
    make_run(base)
    argv = ["report", str(run), "--baseline", str(base), "--metrics", "--clip-model", "tiny", "--no-progress"]
    assert main(argv) == 0
    for output in (run, base):
        mse = pq.read_table(output / "results.parquet").column("pixel_mse").to_pylist()
        assert mse[0] is not None and mse[1] is not None and mse[2] is None, output  # the failed row: none
    summary = (run / "report" / "index.html").read_text(encoding="utf-8").split('id="flicker-summary"', 1)[1]
    summary = summary.split("</table>", 1)[0]
    assert "over the 2 clips × prompts both runs scored" in summary and "No clip and prompt" not in summary
    # the CLIP scores too, a mean per run
    assert len(_cells(summary, "mean-clip_text")) == 2 and "—" not in _cells(summary, "mean-clip_text")


# ---------------------------------------------------------------------------------------------------
# --compare: more runs after this one (the demo's Pix2Video + fusion, an option beyond the paper).
# ---------------------------------------------------------------------------------------------------


def _three_runs(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, np.ndarray]]:
    """_two_runs and a third run whose edit of clip 'a' is the input darkened (a steady edit unlike the
    other two), with Pixel-MSE 5 and 8."""
    from pipeline.io.video import write_video

    run, base, frames = _two_runs(tmp_path)
    fused = tmp_path / "fusion"
    make_run(fused)
    dark = (frames["a"] // 3).astype(np.uint8)
    write_video(fused / "videos" / "a__a-red-car.mp4", dark, 8.0)
    _with_pixel_mse(fused, [5.0, 8.0, None])
    return run, base, fused, {**frames, "dark": dark}


def _webp_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as webp:
        assert webp.format == "WEBP" and webp.is_animated
        out = []
        for t in range(webp.n_frames):
            webp.seek(t)
            out.append(np.asarray(webp.convert("RGB")))
    return out


def test_compare_shows_a_third_run_after_this_one(tmp_path):
    from pipeline.io.video import read_frames

    run, base, fused, frames = _three_runs(tmp_path)
    argv = ["report", str(run), "--baseline", str(base), "--baseline-label", "per-frame", "--no-progress"]
    assert main([*argv, "--compare", f"+ fusion (opt-in)={fused}", "--label", "Pix2Video (paper)"]) == 0
    page = run / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    refs = [r for r in _refs(page).refs if not r.startswith("#")]
    for ref in refs:
        assert (page.parent / ref).is_file(), ref
    summary = text.split('id="flicker-summary"', 1)[1].split("</table>", 1)[0]
    header = summary.split("</tr>", 1)[0]
    assert header.index("per-frame") < header.index("Pix2Video (paper)") < header.index("+ fusion (opt-in)")
    assert _cells(summary, "mean-pixel_mse") == ["40.00", "15.00", "6.50"]
    assert "over the 2 clips × prompts all 3 runs scored" in summary
    assert _cells(summary, "steadier") == ["(reference)", "2 of 2", "2 of 2"]
    clip_a = text.split('id="clip-a__a-red-car"', 1)[1].split('class="clip"', 1)[0]
    assert "input | per-frame | Pix2Video (paper) | + fusion (opt-in)" in clip_a
    table = clip_a.split('class="flicker"', 1)[1].split("</table>", 1)[0]
    assert [c.split("</td>")[0] for c in table.split('<td class="num">')[1:]] == ["30.00", "10.00", "5.00"]
    assert 'href="../../fusion/videos/a__a-red-car.mp4"' in clip_a and "+ fusion (opt-in) video" in clip_a

    # four panels in page order, the same frame of each
    shown = _webp_frames(page.parent / "assets" / "a__a-red-car-compare.webp")
    height, band, pitch = 192, 23, 192 + 6
    assert shown[0].shape[1] == 4 * 192 + 3 * 6

    def panel(t: int, i: int) -> np.ndarray:
        tile = shown[t][band : band + height, i * pitch : i * pitch + height]
        return np.asarray(Image.fromarray(tile).resize((16, 16), Image.BOX), dtype=np.float64)

    def small(image: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((16, 16), Image.BOX), dtype=np.float64)

    edit = read_frames(str(run / "videos" / "a__a-red-car.mp4")).frames
    dark = read_frames(str(fused / "videos" / "a__a-red-car.mp4")).frames
    for t in range(FRAMES):
        assert np.abs(panel(t, 0) - small(frames["a"][t])).mean() < 6, t
        assert np.abs(panel(t, 2) - small(edit[t])).mean() < 6, t
        assert np.abs(panel(t, 3) - small(dark[t])).mean() < 6, t
    assert np.abs(panel(0, 3) - small(edit[0])).mean() > 40  # the fusion panel is its own video
    with Image.open(page.parent / "assets" / "a__a-red-car-strip.png") as png:
        assert png.size[1] > 4 * 128  # a row per panel


def test_compare_without_a_baseline_counts_against_this_run(tmp_path):
    run, _, fused, _ = _three_runs(tmp_path)
    assert main(["report", str(run), "--compare", str(fused), "--no-progress"]) == 0
    text = (run / "report" / "index.html").read_text(encoding="utf-8")
    summary = text.split('id="flicker-summary"', 1)[1].split("</table>", 1)[0]
    assert _cells(summary, "mean-pixel_mse") == ["15.00", "6.50"]  # this run, then the compared one
    assert _cells(summary, "steadier") == ["(reference)", "2 of 2"] and "flickers less than Pix2Video" in summary
    assert "Pix2Video | fusion" in text  # the folder's name is the default label


@pytest.mark.parametrize("case", ["the baseline again", "this run", "a label twice", "an empty label"])
def test_a_wrong_compared_run_is_refused_in_one_line(tmp_path, capsys, case):
    run, base, fused, _ = _three_runs(tmp_path)
    argv = ["report", str(run), "--baseline", str(base), "--no-progress"]
    extra = {
        "the baseline again": ["--compare", f"again={base}"],
        "this run": ["--compare", str(run)],
        "a label twice": ["--compare", f"per-frame={fused}"],
        "an empty label": ["--compare", f" ={fused}"],
    }[case]
    before = _files(tmp_path)
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    expected = {
        "the baseline again": "is given twice",
        "this run": "is the run itself",
        "a label twice": "labelled 'per-frame'",
        "an empty label": "LABEL=DIR",
    }
    assert err.count("\n") == 1 and expected[case] in err, err
    assert _files(tmp_path) == before and not (run / "report").exists()


def test_the_runs_play_in_headless_chromium(tmp_path):
    """The animation of four runs plays in Chromium: screenshots of it some time apart differ (one
    image for all the runs, so their panels cannot drift apart)."""
    from browser import frames_seen

    run, base, fused, _ = _three_runs(tmp_path)
    argv = ["report", str(run), "--baseline", str(base), "--compare", f"fusion={fused}", "--no-progress"]
    assert main(argv) == 0
    page = (run / "report" / "index.html").resolve().as_uri()
    seen = frames_seen(page, "img.animation")
    assert len(seen) == 12 and len(set(seen)) > 1, seen  # it plays (4 frames of 125 ms, 12 shots ~0.1 s apart)
    # a still part of the page stays the same: the screenshots themselves are steady
    still = frames_seen(page, "img.strip", shots=3)
    assert len(set(still)) == 1, still
