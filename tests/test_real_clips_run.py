"""Shot cuts and masked edits through `pix2video run` on the session's local Ray instance: the manifest's
`shots` and `mask` columns, the results' columns (the `--anchor-refresh` used included), a bad mask
failing its own rows while the others finish, and a rerun that finds every finished clip done (tiny
models, 64x64, 2 steps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from runs import tiny_options

from actors.runner import RunOptions, run_dataset
from pipeline.dataset.manifest import load_manifest
from pipeline.dataset.storage import StorageOptions


def _masks(folder: Path, frames: int) -> str:
    folder.mkdir()
    for i in range(frames):
        m = np.zeros((64, 64), np.uint8)
        m[16 + i : 40 + i, 16:40] = 255
        Image.fromarray(m).save(folder / f"{i:06d}.png")
    return folder.name


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.clips import write_sample_video

    root = tmp_path_factory.mktemp("real-clips")
    for name, frames, seed in (("cut", 4, 1), ("masked", 3, 2), ("badmask", 3, 3), ("plain", 3, 4)):
        write_sample_video(root / f"{name}.mp4", num_frames=frames, width=64, height=64, seed=seed)
    rows = [
        {"video": "cut.mp4", "prompt": ["{caption}, at night"], "shots": [0, 2]},
        {"video": "masked.mp4", "prompt": ["a red car"], "mask": _masks(root / "m-good", 3)},
        {"video": "badmask.mp4", "prompt": ["a red car"], "mask": _masks(root / "m-bad", 2)},  # a frame short
        {"video": "plain.mp4", "prompt": ["a red car"], "source_prompt": "shapes"},
    ]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _options(out: Path) -> RunOptions:
    from pipeline.method.editor import EditConfig

    return tiny_options(out, config=EditConfig(steps=2, anchor_refresh=2))


def test_shots_and_masks_through_run(ray_cluster: str, clips: Path, tmp_path: Path) -> None:
    manifest = load_manifest(str(clips / "manifest.jsonl"), StorageOptions())
    out = tmp_path / "out"
    summary = run_dataset(manifest, _options(out))
    rows = {Path(r["video"]).stem: r for r in pq.read_table(out / "results.parquet").to_pylist()}

    cut = rows["cut"]
    assert cut["status"] == "ok", cut["error"]
    assert cut["shots"] == [0, 2] and len(cut["shot_source_prompts"]) == 2
    # {caption} filled per shot with that shot's own caption (of its own anchor frame)
    assert cut["shot_prompts"] == [f"{c}, at night" for c in cut["shot_source_prompts"]]
    assert cut["prompt"] == cut["shot_prompts"][0] and cut["source_prompt"] == cut["shot_source_prompts"][0]

    masked = rows["masked"]
    assert masked["status"] == "ok", masked["error"]
    assert masked["mask"] == str(clips / "m-good") and masked["shots"] == [0]

    bad = rows["badmask"]
    assert bad["status"] == "failed" and bad["mask"] == str(clips / "m-bad")
    assert str(clips / "m-bad") in bad["error"] and "2 frame(s) but the clip has 3" in bad["error"]
    assert "\n" not in bad["error"]

    plain = rows["plain"]
    assert plain["status"] == "ok" and plain["shots"] == [0] and plain["mask"] is None
    assert plain["shot_source_prompts"] == ["shapes"] and plain["shot_prompts"] == ["a red car"]
    assert plain["anchor_refresh"] == 2 and bad["anchor_refresh"] is None  # stated where it was used
    assert summary.ok == 3 and summary.failed == 1

    again = run_dataset(manifest, _options(out))  # resume: finished clips are done, the bad one is redone
    assert again.skipped == 3 and again.ok == 3 and again.failed == 1


def test_editor_call_with_shots_and_masks_without_ray(clips: Path, tmp_path: Path) -> None:
    """The actor class without Ray, three videos in one call (shared UNet batches): a clip cut in two
    shots, a masked clip and a clip with a bad mask. The bad mask fails its own row, with a line naming
    it; the others are written; the cut clip's shots each got their own inversion in the store."""
    from pipeline.dataset.manifest import Unit
    from pipeline.stages.edit import EditStage
    from pipeline.stages.precompute import PrecomputeStage

    opts = _options(tmp_path)
    spec = opts.precompute_spec()
    metas = {
        name: PrecomputeStage(spec, StorageOptions()).run(name, str(clips / f"{name}.mp4"), False, False, shots)
        for name, shots in (("cut", [0, 2]), ("masked", None), ("badmask", None))
    }
    assert metas["cut"].shots == [0, 2] and metas["cut"].shots_of == ["given", [0, 2]]
    good, bad = str(clips / "m-good"), str(clips / "m-bad")
    units = {
        "cut": Unit("cut", "cut", "cut.mp4", "a red car", "shapes", 0, "cut__a", shots=(0, 2)),
        "masked": Unit("masked", "masked", "masked.mp4", "a red car", "shapes", 1, "masked__a", mask=good),
        "badmask": Unit("badmask", "badmask", "badmask.mp4", "a red car", "shapes", 2, "bad__a", mask=bad),
    }
    edit = opts.edit_spec()
    result = EditStage("tiny").edit_videos([(metas[n], [units[n]]) for n in units], edit, [1, 1, 1])
    rows = {r["key"]: r for r in result["rows"]}
    assert rows["cut__a"]["status"] == "ok" and rows["cut__a"]["shots"] == [0, 2]
    assert rows["cut__a"]["group_size"] == 2  # the two good videos were edited together
    assert rows["masked__a"]["status"] == "ok" and rows["masked__a"]["mask"] == good
    assert rows["bad__a"]["status"] == "failed" and bad in rows["bad__a"]["error"]
    stored = sorted(p.name for p in Path(metas["cut"].store).iterdir() if p.name.startswith("inversion-"))
    assert len(stored) == 2  # one inversion per shot
