"""The driver's rows as Arrow columns (tables.Rows) and the markers index a run keeps on an object
store as its units finish (resume.IndexWriter), so that the scan after a killed run reads only the
markers the index does not hold (issue 24, item 4)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from pipeline.dataset import resume, storage
from pipeline.dataset.manifest import Manifest, Unit
from pipeline.dataset.results import build_table, keep_scores
from pipeline.dataset.storage import parse_storage_options
from pipeline.dataset.tables import METRIC_COLUMNS, RESULTS_SCHEMA, Rows


def test_rows_read_as_a_dict_of_rows_and_a_key_given_again_replaces_its_row() -> None:
    rows = Rows()
    rows.add("a", {"status": "ok", "num_frames": 3})
    rows.add("b", {"status": "failed", "error": "boom"})
    rows.add("a", {"status": "ok", "num_frames": 5})  # as dict[key] = row: the last one stays
    assert len(rows) == 2 and sorted(rows) == ["a", "b"]
    assert rows["a"]["num_frames"] == 5 and rows["b"]["error"] == "boom" and rows["b"]["num_frames"] is None
    assert "c" not in rows and rows.get("c") is None
    assert Rows() == {} and rows != {}
    assert rows.with_status(["b", "zz"], "filtered")["b"]["status"] == "filtered"
    assert rows["b"]["status"] == "failed"  # with_status makes new rows


def test_rows_from_markers_that_fit_no_column_are_rejected_not_raised() -> None:
    lenient = Rows(strict=False)
    lenient.add("good", {"status": "ok", "num_frames": 4})
    lenient.add("bad", {"status": "ok", "num_frames": "four"})
    assert list(lenient) == ["good"] and lenient.rejected == ["bad"]
    strict = Rows()
    strict.add("bad", {"status": "ok", "num_frames": "four"})
    with pytest.raises(pa.ArrowException):
        len(strict)


def test_build_table_from_rows_orders_types_scores_and_labels_as_from_dicts() -> None:
    units = [Unit(f"v{i}", f"v{i}", f"/c/v{i}.mp4", "p", None, i, f"k{i}") for i in range(4)]
    manifest = Manifest(units=units, carried=pa.table({"label": [10, 11, 12, 13]}), source="m")
    metric = METRIC_COLUMNS[0]
    rows = {"k3": {"status": "ok", metric: math.nan}, "k1": {"status": "ok", "fps": 8.0}, "other": {"status": "ok"}}
    table = build_table(manifest, rows)
    assert table.column_names == [*RESULTS_SCHEMA.names, *METRIC_COLUMNS, "label"]
    assert table.schema.field("num_frames").type == pa.int32()
    got = table.to_pylist()
    assert [r["label"] for r in got] == [11, 13]  # manifest order; a key of no unit is left out
    assert got[1][metric] is None  # a NaN given makes the columns, stored as null
    previous = pa.table({"key": ["k1"], "filtered": [True], metric: pa.array([0.25], pa.float64())})
    kept = build_table(manifest, keep_scores(Rows.of_dicts(rows), previous)).to_pylist()
    assert (kept[0]["status"], kept[0][metric], kept[1]["status"]) == ("filtered", 0.25, "ok")
    assert build_table(manifest, {}).num_rows == 0


def test_a_killed_runs_index_parts_leave_the_scan_only_the_markers_they_miss(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's driver writes index parts as units finish; killed before its last part, the next scan
    GETs only the markers no part holds (and one rewritten since: its ETag changed), folds the parts
    into OUTPUT/markers-index.parquet, and the scan after that reads none."""
    opts = parse_storage_options(endpoint_url=s3_endpoint)
    fs, _ = storage.filesystem("s3://index-bucket", opts)
    fs.mkdir("index-bucket")
    out, settings, run = "s3://index-bucket/out", "s", "r" * 32
    writer = resume.IndexWriter(out, settings, run, opts, every=2, seconds=3600.0)
    for i in range(5):  # what an editor does, then what the driver learns of it
        key = f"k{i}"
        row = {"key": key, "id": f"v{i}", "status": "ok", "num_frames": i, "fps": 8.0, "shots": [0]}
        storage.write_bytes(resume.output_url(out, key), b"mp4", opts)
        resume.mark_done(out, key, row, settings, opts, run=run)
        writer.add([{**row, METRIC_COLUMNS[0]: 0.5}])  # the editor's row carries metrics; markers do not
    writer.add([{"key": "k9", "status": "failed", "error": "x"}])  # no marker: not indexed
    assert writer.written == 2 and len(writer.rows) == 1  # k4 not written yet: the run is killed here
    resume.mark_done(out, "k1", {"id": "v1", "status": "ok", "num_frames": 7}, settings, opts, run="other")
    reads: list[str] = []
    cat = fs.cat  # fsspec caches filesystems: resume's is this one

    def counting(paths, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        reads.extend(p.rsplit("/", 1)[-1] for p in paths if "/markers/" in p)
        return cat(paths, *a, **k)

    monkeypatch.setattr(fs, "cat", counting)
    done, stale = resume.done_rows(out, settings, opts)
    assert sorted(reads) == ["k1.json", "k4.json"] and stale == 0
    assert sorted(done) == [f"k{i}" for i in range(5)] and done["k1"]["num_frames"] == 7
    assert done["k2"]["num_frames"] == 2 and done["k2"]["shots"] == [0]
    assert fs.exists(f"index-bucket/out/{resume.INDEX}")
    assert storage.list_names(storage.join(out, resume.INDEX_PARTS), opts) == []  # folded into the one file
    reads.clear()
    again, _ = resume.done_rows(out, settings, opts)
    assert reads == [] and again == done


def test_the_index_writer_does_nothing_on_local_disk(tmp_path) -> None:
    writer = resume.IndexWriter(str(tmp_path / "out"), "s", "r", parse_storage_options(), every=1)
    writer.add([{"key": "k", "status": "ok"}])
    writer.close()
    assert not (tmp_path / "out").exists()


def test_previous_scores_reads_what_a_rerun_keeps_and_nothing_else(tmp_path) -> None:
    from pipeline.dataset.results import previous_scores
    from pipeline.dataset.tables import RESULTS, write_table

    units = [Unit(f"v{i}", f"v{i}", f"/c/v{i}.mp4", "p", None, i, f"k{i}") for i in range(3)]
    manifest = Manifest(units=units, carried=pa.table({}), source="m")
    out = str(tmp_path)
    metric = METRIC_COLUMNS[1]
    rows = {
        "k0": {"status": "ok", "output": resume.output_url(out, "k0"), metric: 0.5},
        "k1": {"status": "filtered", "output": resume.output_url(out, "k1")},
        "k2": {"status": "ok", "output": resume.output_url(out, "k2")},  # nothing to keep
    }
    write_table(build_table(manifest, rows), storage.join(out, RESULTS), parse_storage_options())
    previous = previous_scores(out, parse_storage_options())
    got = {r["key"]: (r["filtered"], r[metric]) for r in previous.to_pylist()}
    assert got == {"k0": (False, 0.5), "k1": (True, None)}
    assert previous_scores(str(tmp_path / "none"), parse_storage_options()) is None
