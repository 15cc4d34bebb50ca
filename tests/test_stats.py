"""OUTPUT/stats.json (pipeline/dataset/stats.py): counts by status and by kind of failure, frames,
seconds per stage, throughput, settings and versions, from a results table; written whole."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.dataset import stats
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.tables import RESULTS_SCHEMA, from_rows

OPTS = StorageOptions()


def _row(status: str, error: str | None = None, frames: int | None = 4, **seconds: float) -> dict:
    return {
        "id": "v",
        "status": status,
        "error": error,
        "num_frames": frames,
        **{f"seconds_{k}": v for k, v in seconds.items()},
    }


def _table() -> pa.Table:
    rows = [
        _row("ok", decode=1.5, depth=2.0, edit=10.0, write=0.5),
        _row("ok", edit=9.0, write=0.25),
        _row("failed", "/data/clips/a.mp4: no such file; check the URL", None, decode=0.1),
        _row("failed", "s3://b/clips/b.mp4: no such file; check the URL", None),
        _row("failed", "https://user:***@host/c.mp4: InvalidDataError: [Errno 1094995529] Invalid data", None),
        _row("failed", "video has 300 frames, more than --max-frames 200", None),
        _row("filtered", frames=4),
    ]
    return from_rows(rows, RESULTS_SCHEMA)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("/x/a.mp4: no such file; check the URL", "no such file"),
        ("s3://bucket/key with space.mp4: no such file; check the URL", "no such file"),
        ("clip.mov: InvalidDataError: [Errno 1094995529] Invalid data found", "InvalidDataError"),
        ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "RuntimeError"),
        ("video has 300 frames, more than --max-frames 200", "video has N frames, more than --max-frames N"),
        (
            "the editor process died 3 times while editing this video (out of memory?)",
            "the editor process died N times while editing this video (out of memory?)",
        ),
        ("shots [0, 'x']: not a list of frame numbers", "shots [N, '…']: not a list of frame numbers"),
        (None, "unknown"),
        ("  ", "unknown"),
    ],
)
def test_error_kinds_leave_out_the_clip_and_the_numbers(error: str | None, kind: str) -> None:
    assert stats.error_kind(error) == kind


def test_run_stats_from_a_results_table() -> None:
    versions = {"python": "3.11", "torch": "2.13.0"}
    s = stats.run_stats(
        _table(),
        total=9,
        settings="abc123",
        seconds=20.0,
        frames=8,
        done_before=3,
        versions=versions,
        devices={"editors": ["cpu"]},
        editors={"count": 1},
        output="s3://b/out?X-Amz-Signature=secret",
    )
    assert s["by_status"] == {"failed": 4, "filtered": 1, "ok": 2}
    assert s["failures"] == {
        "no such file": 2,
        "InvalidDataError": 1,
        "video has N frames, more than --max-frames N": 1,
    }
    assert s["units"] == {"total": 9, "done_before": 3, "in_table": 7}
    assert s["frames"] == {"ok_outputs": 8, "edited_this_run": 8}
    assert s["seconds"]["run"] == 20.0
    assert s["seconds"]["by_stage"]["edit"] == pytest.approx(19.0)
    assert s["seconds"]["by_stage"]["decode"] == pytest.approx(1.6) and s["seconds"]["by_stage"]["caption"] == 0
    assert set(s["seconds"]["by_stage"]) == {"decode", "depth", "caption", "load", "invert", "edit", "write"}
    assert s["throughput"] == {"frames_per_second": 0.4, "units_per_hour": 720.0}  # 4 units made in 20 s
    assert (s["settings"], s["versions"], s["devices"], s["editors"]) == (
        "abc123",
        versions,
        {"editors": ["cpu"]},
        {"count": 1},
    )
    assert "secret" not in json.dumps(s) and s["interrupted"] is False


def test_versions_are_the_installed_packages() -> None:
    v = stats.package_versions()
    assert set(v) == {"python", "pix2video", "torch", "diffusers", "transformers", "ray"}
    assert v["torch"] == metadata.version("torch") and v["ray"] == metadata.version("ray")


def test_an_empty_table_and_no_time() -> None:
    s = stats.run_stats(from_rows([], RESULTS_SCHEMA), total=0, settings="x", seconds=0.0, frames=0, done_before=0)
    assert s["by_status"] == {} and s["failures"] == {}
    assert s["throughput"] == {"frames_per_second": None, "units_per_hour": None}


def test_written_whole_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    s = stats.run_stats(_table(), total=7, settings="x", seconds=1.0, frames=0, done_before=0, interrupted=True)
    url = stats.write_stats(s, str(out), OPTS)
    assert url == str(out / "stats.json") and stats.read_stats(str(out), OPTS) == json.loads(json.dumps(s))
    assert [p.name for p in out.iterdir()] == ["stats.json"]  # no temporary beside it
    (out / "stats.json").write_text("{not json")
    assert stats.read_stats(str(out), OPTS) is None
    assert stats.read_stats(str(tmp_path / "none"), OPTS) is None


def test_recount_after_filtering() -> None:
    s = stats.run_stats(_table(), total=7, settings="x", seconds=1.0, frames=0, done_before=0)
    rows = _table().to_pylist()
    rows[0]["status"] = "filtered"
    again = stats.recount(s, from_rows(rows, RESULTS_SCHEMA))
    assert again["by_status"] == {"failed": 4, "filtered": 2, "ok": 1} and again["settings"] == "x"


def test_refresh_recounts_the_written_table(tmp_path: Path) -> None:
    from pipeline.dataset.tables import write_table

    out = str(tmp_path / "out")
    stats.refresh(out, OPTS)  # no stats yet: nothing written
    assert not (tmp_path / "out").exists()
    stats.write_stats(stats.run_stats(_table(), total=7, settings="x", seconds=1.0, frames=0, done_before=0), out, OPTS)
    rows = _table().to_pylist()
    rows[1]["status"] = "filtered"
    write_table(from_rows(rows, RESULTS_SCHEMA), f"{out}/results.parquet", OPTS)
    stats.refresh(out, OPTS)
    assert stats.read_stats(out, OPTS)["by_status"] == {"failed": 4, "filtered": 2, "ok": 1}


def test_the_report_shows_the_runs_stats_at_the_end(tmp_path: Path) -> None:
    from fake_run import make_run

    from jobs.cli import main
    from pipeline.dataset.tables import read_table

    out = tmp_path / "run"
    make_run(out)
    assert main(["report", str(out), "--no-progress"]) == 0
    assert 'id="run-stats"' not in (out / "report" / "index.html").read_text(encoding="utf-8")  # none written
    table = read_table(str(out / "results.parquet"), OPTS)
    rows = table.to_pylist()
    rows[-1] |= {"status": "failed", "error": "x.mp4: <b>bad</b>\x07 frame; try again"}
    s = stats.run_stats(
        from_rows(rows, RESULTS_SCHEMA), total=5, settings="f1ngerprint", seconds=12.5, frames=6, done_before=1
    )
    stats.write_stats({**s, "run": "0123456789ab"}, str(out), OPTS)
    assert main(["report", str(out), "--no-progress"]) == 0
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    tail = page[page.index('id="clips"') :]  # after the summary and the clips: the end of the page
    assert 'id="run-stats"' in tail and "0123456789ab" in tail and "f1ngerprint" in tail
    assert "&lt;b&gt;bad&lt;/b&gt; frame" in tail and "<b>bad</b>" not in page and "\x07" not in page
    assert f"torch {metadata.version('torch')}" in tail and "12.5" in tail
    assert 'id="pictures-from"' not in page  # stats written before the models were recorded: no claim

    # What the pictures come from, at the top of the page, in a sentence: never a toy model's for SD2's.
    for model, said in (("toy", "trained on the synthetic toy world"), ("tiny", "noise-like pictures")):
        stats.write_stats({**s, "models": {"diffusion": model, "caption": model}}, str(out), OPTS)
        assert main(["report", str(out), "--no-progress"]) == 0
        page = (out / "report" / "index.html").read_text(encoding="utf-8")
        head = page[: page.index("<h2")]
        assert f'id="pictures-from">pictures from <code>{model}</code>' in head and said in head, model
