"""Resume markers: a unit is done only when its marker AND its output exist; an unreadable marker
(truncated, not JSON, not an object) is "not done", said once, never an error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.dataset import resume, storage
from pipeline.dataset.manifest import load_manifest
from pipeline.dataset.storage import StorageOptions

OPTS = StorageOptions()


def _units(tmp_path: Path, n: int):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(n):
        (folder / f"v{i}.mp4").write_bytes(b"not decoded here")
    return load_manifest(str(folder), OPTS, prompts=["x"]).units


def _finish(out: str, key: str, settings: str = "s") -> None:
    """What an editor does for a finished unit: the mp4, then the marker."""
    storage.write_bytes(resume.output_url(out, key), b"mp4 bytes", OPTS)
    resume.mark_done(out, key, {"status": "ok", "output": resume.output_url(out, key)}, settings, OPTS)


def test_deleted_output_makes_its_unit_not_done(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    a, b = _units(tmp_path, 2)
    _finish(out, a.key)
    _finish(out, b.key)
    assert resume.is_done(out, a.key, "s", OPTS) is not None
    Path(resume.output_url(out, a.key)).unlink()  # the user deleted one mp4 after the run

    assert resume.is_done(out, a.key, "s", OPTS) is None
    assert resume.is_done(out, b.key, "s", OPTS) is not None
    done, stale = resume.done_rows(out, "s", OPTS)
    assert list(done) == [b.key] and stale == 0
    assert resume.pending([a, b], done) == [a]


@pytest.mark.parametrize(
    "blob",
    [b'{"status": "ok", "out', b"", b"\xff\xfe not utf-8", b"[1, 2]", b"null"],
    ids=["truncated", "empty", "not-utf8", "a-list", "null"],
)
def test_unreadable_marker_is_not_done_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, blob: bytes
) -> None:
    out = str(tmp_path / "out")
    a, b, c = _units(tmp_path, 3)
    for u in (a, b, c):
        _finish(out, u.key)
    for u in (a, b):  # damaged markers (a disk that filled up, an editor by hand)
        Path(resume.marker_url(out, u.key)).write_bytes(blob)

    with caplog.at_level(logging.WARNING, logger="pipeline.dataset.resume"):
        done, stale = resume.done_rows(out, "s", OPTS)
    assert list(done) == [c.key] and stale == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # one line for all of them, not one per marker
    assert "2 completion marker(s)" in warnings[0] and a.key in warnings[0] and "redone" in warnings[0]

    assert resume.is_done(out, a.key, "s", OPTS) is None  # the editor's check: not an exception either
    _finish(out, a.key)  # redoing the unit rewrites its marker
    assert json.loads(Path(resume.marker_url(out, a.key)).read_bytes())["status"] == "ok"
    assert resume.is_done(out, a.key, "s", OPTS) is not None


def test_rerun_redoes_a_deleted_output_and_a_damaged_marker(ray_cluster: str, tmp_path: Path) -> None:
    """The issue's case end to end: after a finished run one mp4 is deleted and one marker truncated;
    the same run again makes both again, and every `ok` row's output exists."""
    import pyarrow.parquet as pq
    from test_dataset_ray import _options  # the suite's tiny run options

    from actors.runner import run_dataset
    from fixtures.clips import write_sample_video

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        write_sample_video(clips / f"c{i}.mp4", num_frames=2, width=64, height=64, seed=i)
    manifest = load_manifest(str(clips), OPTS, prompts=["x"])
    out = tmp_path / "out"

    def run():
        opts = _options(out)
        return run_dataset(manifest, opts)

    assert run().ok == 3
    gone, damaged, kept = manifest.units
    Path(resume.output_url(str(out), gone.key)).unlink()
    Path(resume.marker_url(str(out), damaged.key)).write_bytes(b'{"status": "o')
    again = run()
    assert (again.ok, again.failed, again.skipped, again.videos) == (3, 0, 1, 2)
    rows = pq.read_table(again.results).to_pylist()
    assert all(r["status"] == "ok" and Path(r["output"]).is_file() for r in rows)
    assert json.loads(Path(resume.marker_url(str(out), damaged.key)).read_bytes())["status"] == "ok"
