"""The stages as Ray Data UDFs (issue 25 item 8): the README's pipeline, on the session's local cluster,
writes the same outputs, markers and results rows as `run` of the same manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from runs import tiny_options

from actors.runner import run_dataset
from pipeline.dataset.manifest import load_manifest
from pipeline.dataset.storage import StorageOptions
from pipeline.stages.options import RunOptions

# Columns that are the same whoever edits (timings, attempts and the call's grouping are not).
SAME = ["id", "video", "prompt", "source_prompt", "status", "error", "num_frames", "fps", "width", "height", "shots"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.clips import write_sample_video

    root = tmp_path_factory.mktemp("raydata")
    for i in range(2):
        write_sample_video(root / f"c{i}.mp4", num_frames=3, width=64, height=64, seed=i)
    rows = [{"video": f"c{i}.mp4", "prompt": ["a watercolor painting", "{caption}, at night"]} for i in range(2)]
    rows.append({"video": "missing.mp4", "prompt": "a red car"})
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _options(output: Path) -> RunOptions:
    return tiny_options(output, videos_per_call=1)


def test_ray_data_pipeline_writes_what_run_writes(ray_cluster: str, clips: Path, tmp_path: Path) -> None:
    import ray.data

    from pipeline.dataset.results import build_table
    from pipeline.dataset.tables import RESULTS, write_table
    from pipeline.stages.edit import EditStage
    from pipeline.stages.items import result_rows, video_items
    from pipeline.stages.precompute import PrecomputeStage

    manifest = load_manifest(str(clips / "m.jsonl"), StorageOptions())
    by_run = run_dataset(manifest, _options(tmp_path / "run"))
    assert (by_run.ok, by_run.failed) == (4, 1)

    # The README's example ("Ray Data"), as a user writes it.
    opts = _options(tmp_path / "data")
    opts.locate()
    ds = ray.data.from_items(video_items(manifest.videos()))
    ds = ds.map_batches(
        PrecomputeStage, fn_constructor_kwargs={"spec": opts.precompute_spec()}, batch_size=1, concurrency=1
    )
    ds = ds.map_batches(
        EditStage,
        fn_constructor_kwargs={"model": opts.model, "spec": opts.edit_spec(), "threads": 1},
        batch_size=1,
        num_gpus=1,  # the session's cluster has logical GPUs; the tiny model runs on the CPU
        num_cpus=0,
        concurrency=1,
    )
    rows = result_rows(ds.take_all())
    write_table(build_table(manifest, rows), f"{opts.output}/{RESULTS}", opts.storage)

    run_table = pq.read_table(tmp_path / "run" / RESULTS).to_pylist()
    data_table = pq.read_table(tmp_path / "data" / RESULTS).to_pylist()
    assert [{k: r[k] for k in SAME} for r in data_table] == [{k: r[k] for k in SAME} for r in run_table]
    assert {r["status"] for r in data_table} == {"ok", "failed"}
    for a, b in zip(run_table, data_table, strict=True):
        if a["status"] != "ok":
            assert "missing.mp4" in b["error"]
            continue
        assert Path(a["output"]).name == Path(b["output"]).name  # the same file names and markers
        marker = tmp_path / "data" / "markers" / f"{Path(b['output']).stem}.json"
        assert json.loads(marker.read_text())["settings"] == opts.fingerprint()
        from pipeline.io.video import read_frames

        fa, fb = read_frames(a["output"]).frames, read_frames(b["output"]).frames
        assert fa.shape == fb.shape == (3, 64, 64, 3)
        # One video per call both ways, one torch thread: the same arithmetic; after H.264 a level or two.
        assert np.abs(fa.astype(np.int16) - fb).mean() < 1.0

    # `run` on the Ray Data output finds everything done: the same markers and settings.
    again = run_dataset(manifest, _options(tmp_path / "data"))
    assert (again.skipped, again.videos) == (4, 1)  # only the missing clip is tried again
