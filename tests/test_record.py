"""The per-video precompute record (pipeline/stages/record.py): meta.json in and out, with the keys
stores written before it had a type hold, so those stores are reused as they are."""

from __future__ import annotations

import json

from pipeline.stages.record import PrecomputeRecord

# A meta.json as the precompute task wrote it before the record existed (captioned).
OLD = {
    "name": "a",
    "video": "clips/a.mp4",
    "spec": {
        "model": "tiny", "size": [64, 64], "max_frames": None, "dtype": "float32", "device": "cpu", "depth_batch": 8
    },
    "store": "out/precompute/a/64x64-0123",
    "frames": "out/precompute/a/64x64-0123/frames.npy",
    "depth": "out/precompute/a/64x64-0123/depth.npy",
    "num_frames": 3,
    "fps": 8.0,
    "width": 64,
    "height": 64,
    "src_width": 96,
    "src_height": 64,
    "caption": "a red ball",
    "caption_of": ["tiny", "first", "float32", "cpu"],
    "status": "ok",
    "error": None,
    "seconds_decode": 0.5,
    "seconds_depth": 1.5,
    "seconds_caption": 0.25,
}


def test_an_old_meta_json_round_trips_byte_for_byte() -> None:
    record = PrecomputeRecord.from_json(json.loads(json.dumps(OLD)))
    assert record.num_frames == 3 and record.caption_of == ["tiny", "first", "float32", "cpu"] and record.ok
    assert record.dumps() == json.dumps(OLD).encode()


def test_no_caption_no_caption_of() -> None:
    old = {k: v for k, v in OLD.items() if k != "caption_of"} | {"caption": None}
    record = PrecomputeRecord.from_json(old)
    assert record.caption_of is None
    assert record.dumps() == json.dumps(old).encode()


def test_unknown_keys_load_and_are_written_back() -> None:
    record = PrecomputeRecord.from_json(OLD | {"added_later": {"x": 1}})
    assert record.extra == {"added_later": {"x": 1}}
    assert record.to_json() == OLD | {"added_later": {"x": 1}}
    assert record["added_later"] == {"x": 1} and record["status"] == "ok"


def test_cached_is_not_stored() -> None:
    record = PrecomputeRecord.from_json(OLD)
    record.cached = True
    assert "cached" not in record.to_json() and record["cached"] is True


def test_a_failed_record() -> None:
    record = PrecomputeRecord.failed("x.mp4: no such file", name="x", video="x.mp4", seconds_decode=0.1)
    assert not record.ok and record.status == "failed" and record.error == "x.mp4: no such file"
    assert (record.num_frames, record.width, record.caption, record.seconds_depth) == (None, None, None, 0.0)


def test_keys_read_keep_their_places() -> None:
    """A store made without a caption, captioned by a later run: caption_of follows the keys it had."""
    old = {k: v for k, v in OLD.items() if k != "caption_of"} | {"caption": None, "added_later": 1}
    record = PrecomputeRecord.from_json(old)
    record.caption, record.caption_of = "a red ball", ["tiny", "first", "float32", "cpu"]
    assert list(record.to_json()) == list(old) + ["caption_of"]
