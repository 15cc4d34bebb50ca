"""Bad manifests get one line that names the row, the column and what was expected (issue 8, item 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dataset.manifest import load_manifest
from pipeline.dataset.storage import StorageOptions
from pipeline.errors import InputError

OPTS = StorageOptions()


def _refused(url: Path, *needles: str) -> str:
    with pytest.raises(InputError) as e:
        load_manifest(str(url), OPTS)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def _jsonl(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("text", ["", "\n\n", "[]"], ids=["empty", "blank-lines", "empty-array"])
def test_empty_jsonl_says_it_is_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(text)
    msg = _refused(path, "is empty", "'video'")
    assert "it has ;" not in msg and not msg.rstrip().endswith("it has")


def test_video_that_is_not_a_string_is_named(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "m.jsonl", {"video": "a.mp4", "prompt": "x"}, {"video": 12, "prompt": "y"})
    msg = _refused(path, "row 2", "column 'video'", "int 12", "path or URL")
    assert "empty" not in msg
    table = tmp_path / "m.parquet"
    pq.write_table(pa.table({"video": [7], "prompt": ["x"]}), table)
    _refused(table, "row 1", "column 'video'", "int 7")


def test_missing_video_value_says_empty(tmp_path: Path) -> None:
    _refused(_jsonl(tmp_path / "m.jsonl", {"video": "  ", "prompt": "x"}), "row 1", "column 'video' is empty")


def test_mixed_type_label_column_is_named(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "m.jsonl",
        {"video": "a.mp4", "prompt": "x", "label": 1},
        {"video": "b.mp4", "prompt": "x", "label": None},
        {"video": "c.mp4", "prompt": "x", "label": "cat"},
    )
    _refused(path, "row 3", "column 'label'", "a string 'cat'", "earlier rows hold a number")


def test_label_lists_of_other_shapes_are_named(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "m.jsonl",
        {"video": "a.mp4", "prompt": "x", "boxes": [1, 2]},
        {"video": "b.mp4", "prompt": "x", "boxes": ["a", "b"]},
    )
    _refused(path, "column 'boxes'")


def test_malformed_json_list_in_a_csv_prompt_cell_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('video,prompt\na.mp4,"[""a car"", ""a boat""]"\nb.mp4,"[""a car"", ""a boat""]]"\n')
    _refused(path, "row 2", "column 'prompt'", "not valid JSON", "a one-item list")
    path.write_text('video,prompt\na.mp4,"[""a car"", ""a boat""]"\n')  # a good list still works
    assert [u.prompt for u in load_manifest(str(path), OPTS).units] == ["a car", "a boat"]


def test_prompt_of_the_wrong_type_names_the_column(tmp_path: Path) -> None:
    _refused(_jsonl(tmp_path / "m.jsonl", {"video": "a.mp4", "prompt": 5}), "row 1", "column 'prompt'", "int 5")
    _refused(_jsonl(tmp_path / "n.jsonl", {"video": "a.mp4", "prompt": ["x", 3]}), "row 1", "column 'prompt'", "int 3")


def test_json_array_and_lines_that_are_not_objects(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"video": "a.mp4", "prompt": "x"},')
    _refused(tmp_path / "a.json", "not a valid JSON array")
    _refused(_jsonl(tmp_path / "m.jsonl", {"video": "a.mp4", "prompt": "x"}, ["b.mp4"]), "row 2", "JSON object")
    (tmp_path / "bin.jsonl").write_bytes(b'{"video": "\xff.mp4"}\n')
    _refused(tmp_path / "bin.jsonl", "not UTF-8")


def test_csv_without_video_column_lists_what_it_has(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("clip,prompt\na.mp4,x\n")
    _refused(tmp_path / "m.csv", "needs a 'video' column", "'clip', 'prompt'")
