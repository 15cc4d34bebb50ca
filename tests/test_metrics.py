"""The paper's metrics on inputs with known answers, `pix2video evaluate`, and filtering bounds.

CLIP values come from the tiny random CLIP: they are meaningless numbers; the tests only check the
properties that hold for any CLIP (cosines, symmetry, identical frames, dependence on the prompt).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fake_run import make_run
from PIL import Image

from actors.evaluation import evaluate_run
from fixtures.clips import moving_shapes
from jobs._metrics import after_run
from jobs.cli import main
from pipeline.dataset.stored_metrics import apply_bounds
from pipeline.dataset.tables import METRIC_COLUMNS as COLUMNS
from pipeline.errors import InputError
from pipeline.quality import clip as C
from pipeline.quality import flow as FL
from pipeline.quality import metrics as M


@pytest.fixture(scope="module")
def scorer(tiny_model_dir) -> C.ClipScorer:
    return C.ClipScorer.from_model("tiny", device="cpu")


def _texture(seed: int = 0, size: int = 160) -> np.ndarray:
    # Smooth random texture: Farnebäck needs gradients everywhere, and bicubic upsampling of noise has them.
    small = np.random.default_rng(seed).uniform(0, 255, (size // 4, size // 4, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))


def _translated(dx: int, dy: int, n: int = 5, size: int = 64, seed: int = 0) -> np.ndarray:
    """Crops of one big texture, moving (dx, dy) pixels per frame: a pure, known translation."""
    big = _texture(seed)
    return np.stack([big[40 + i * dy : 40 + i * dy + size, 40 + i * dx : 40 + i * dx + size] for i in range(n)])


# ------------------------------------------------------------------------------- flow and warping


def test_warp_with_a_constant_integer_flow_is_a_shift():
    image = _texture()[:64, :64]
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3, -2  # out(x, y) = image(x + 3, y - 2)
    out = FL.warp(image, flow)
    assert np.array_equal(out[2:, :-3], image[:-2, 3:])


def test_flow_recovers_a_known_translation():
    frames = _translated(3, -2)
    forward = FL.optical_flow(frames[0], frames[1])
    inner = forward[12:-12, 12:-12].reshape(-1, 2)
    # Frame 1 is frame 0 moved by (-3, +2) in image coordinates: content at x in frame 0 is at x - (3, -2).
    assert np.median(inner, axis=0) == pytest.approx([-3, 2], abs=0.1)


def test_identical_frames_give_clip_image_one_and_pixel_mse_zero(scorer):
    frames = np.repeat(moving_shapes(1, 64, 64), 4, axis=0)
    m = M.video_metrics(frames, "a red car", scorer)
    assert m.clip_image == pytest.approx(1.0, abs=1e-5)
    assert m.pixel_mse == pytest.approx(0.0, abs=0.05)
    assert len(m.per_frame["clip_text"]) == 4 and len(m.per_frame["pixel_mse"]) == 3


def test_pure_translation_warped_with_the_flow_gives_near_zero_pixel_mse():
    frames = _translated(3, -2)
    naive = ((frames[1:].astype(float) - frames[:-1]) ** 2).mean()
    mse = M.pixel_mse_scores(frames, frames)
    assert naive > 1000  # the frames really differ...
    assert mse.max() < 2.0  # ...but not once warped along the motion
    # An output that is any function of the input pixel by pixel follows the same motion.
    assert M.pixel_mse_scores(255 - frames, frames).max() < 2.0


def test_a_frame_swapped_for_noise_raises_pixel_mse():
    frames = _translated(2, 1)
    noisy = frames.copy()
    noisy[2] = np.random.default_rng(1).integers(0, 256, noisy[2].shape, dtype=np.uint8)
    clean, bad = M.pixel_mse_scores(frames, frames), M.pixel_mse_scores(noisy, frames)
    assert bad[1] > 1000 and bad[2] > 1000  # the two pairs that touch the noise frame
    assert bad[0] == pytest.approx(clean[0]) and bad[3] == pytest.approx(clean[3])
    assert bad.mean() > 100 * max(clean.mean(), 0.1)


def test_consistency_mask_drops_pixels_from_outside_the_frame():
    frames = _translated(4, 0)
    forward, backward = FL.input_flows(frames[:2], 64, 64)[0]
    mask = FL.consistency_mask(backward, forward)
    assert 0.8 < mask.mean() < 1.0
    # Frame 1 is frame 0 moved 4 px left: its rightmost columns come from outside frame 0.
    assert not mask[:, -2:].any()


def test_input_is_resized_to_the_output_size_and_counts_must_match(scorer):
    big = moving_shapes(3, 96, 64)
    out = np.stack([np.asarray(Image.fromarray(f).resize((64, 64), Image.BICUBIC)) for f in big])
    edit, base = M.edit_metrics(out, big, "a red car", scorer)
    assert edit.pixel_mse == pytest.approx(base.pixel_mse, rel=1e-6)  # the output IS the resized input
    assert edit.clip_text == pytest.approx(base.clip_text, abs=1e-6)
    with pytest.raises(InputError, match="3 frames but the input 2"):
        M.edit_metrics(out, big[:2], "a red car", scorer)


# ---------------------------------------------------------------------------------------- CLIP


def test_clip_text_responds_to_the_prompt(scorer):
    frames = moving_shapes(3, 64, 64)
    values = {p: M.video_metrics(frames, p, scorer).clip_text for p in ("a red car", "a dog in the snow", "sky")}
    assert all(-1 <= v <= 1 for v in values.values())
    assert len({round(v, 6) for v in values.values()}) == 3
    assert M.video_metrics(frames, "a red car", scorer).clip_text == values["a red car"]  # deterministic
    per_frame = M.video_metrics(frames, "a red car", scorer).per_frame["clip_text"]
    assert np.mean(per_frame) == pytest.approx(values["a red car"])


def test_clip_image_is_a_cosine_of_consecutive_frames(scorer):
    frames = moving_shapes(3, 64, 64)
    emb = scorer.image_embeddings(frames)
    assert emb.norm(dim=-1) == pytest.approx(np.ones(3), abs=1e-5)
    scores = C.clip_image_scores(emb)
    assert scores == pytest.approx([float(emb[0] @ emb[1]), float(emb[1] @ emb[2])])
    assert M.video_metrics(frames[:1], "x", scorer).clip_image is None  # one frame: nothing to compare


def test_unknown_clip_model_offline_is_one_line():
    with pytest.raises(InputError) as err:
        C.ClipScorer.from_model("nobody/no-such-clip-model")
    assert "--clip-model tiny" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ filtering


def test_within_bounds():
    row = {"clip_text": 0.25, "pixel_mse": 40.0}
    assert M.within_bounds(row)
    assert M.within_bounds(row, min_clip_text=0.2, max_pixel_mse=50)
    assert not M.within_bounds(row, min_clip_text=0.3)
    assert not M.within_bounds(row, max_pixel_mse=39.9)
    assert M.within_bounds({"clip_text": 0.25, "pixel_mse": None}, max_pixel_mse=1)  # undefined: nothing to judge
    assert M.within_bounds({"clip_text": 0.25, "pixel_mse": math.nan}, max_pixel_mse=1)


# ------------------------------------------------------------------------------------- evaluate


def test_evaluate_adds_columns_and_reuses_stored_values(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    make_run(out)
    assert main(["evaluate", str(out), "--clip-model", "tiny", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 computed" in printed and "CLIP-Text ↑" in printed and "meaningless" in printed
    table = pq.read_table(out / "results.parquet")
    assert set(COLUMNS) <= set(table.column_names) and "label" in table.column_names
    rows = table.to_pylist()
    smooth, noisy, failed = rows
    assert failed["clip_text"] is None and failed["status"] == "failed"
    assert noisy["pixel_mse"] > 10 * smooth["pixel_mse"]  # the flicker shows, the colour inversion does not
    # Inverting colours keeps every difference's size: the edit's error is the input's own (up to H.264).
    assert smooth["pixel_mse"] == pytest.approx(smooth["input_pixel_mse"], rel=0.2)
    stored = json.loads((out / "metrics" / "a__a-red-car.json").read_text())
    assert stored["clip_model"] == "tiny" and len(stored["edit"]["per_frame"]["pixel_mse"]) == 3

    assert main(["evaluate", str(out), "--clip-model", "tiny", "--no-progress"]) == 0
    assert "0 computed, 2 up to date" in capsys.readouterr().out
    assert pq.read_table(out / "results.parquet").to_pylist() == rows


def test_evaluate_refuses_a_folder_without_results(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--clip-model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "no results table" in err and len(err.strip().splitlines()) == 1


def test_filtering_marks_rows_and_counts_them(tmp_path, tiny_model_dir, capsys):
    import argparse

    from pipeline.dataset.storage import StorageOptions

    out = tmp_path / "run"
    make_run(out)
    ev = evaluate_run(str(out), StorageOptions(), clip_model="tiny", progress=False)
    smooth, noisy = ev.table.to_pylist()[:2]
    bound = (smooth["pixel_mse"] + noisy["pixel_mse"]) / 2
    table, keys = apply_bounds(ev.table, min_clip_text=None, max_pixel_mse=bound)
    assert keys == ["b__a-dog-in-the-snow"]
    assert table.column("status").to_pylist() == ["ok", "filtered", "failed"]
    _, keys = apply_bounds(ev.table, min_clip_text=max(smooth["clip_text"], noisy["clip_text"]) + 1, max_pixel_mse=None)
    assert len(keys) == 2

    # What `augment --max-pixel-mse` calls after the run: bounds imply --metrics, results are rewritten.
    args = argparse.Namespace(
        output=str(out), metrics=False, clip_model="tiny", device=None, progress=False, min_clip_text=None,
        max_pixel_mse=bound,
    )  # fmt: skip
    assert after_run(args, StorageOptions(), "augment") == ["b__a-dog-in-the-snow"]
    assert "filtered: 1 clips (Pixel-MSE > " in capsys.readouterr().out
    statuses = pq.read_table(out / "results.parquet").column("status").to_pylist()
    assert statuses == ["ok", "filtered", "failed"]
    assert (out / "videos" / "b__a-dog-in-the-snow.mp4").exists()  # kept on disk


def test_edit_metrics_flag_prints_the_table(tmp_path, tiny_model_dir, capsys):
    from fixtures.clips import write_sample_video

    video = write_sample_video(tmp_path / "clip.mp4", num_frames=3, width=64, height=64)
    argv = ["edit", str(video), "-o", str(tmp_path / "out.mp4"), "--prompt", "a red car", "--source-prompt", "shapes"]
    fast = ["--model", "tiny", "--steps", "2", "--size", "64x64", "--no-progress"]
    assert main([*argv, *fast, "--metrics", "--clip-model", "tiny"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if "CLIP-Text ↑" in line)
    assert lines[header + 1].startswith("edit ") and lines[header + 2].startswith("input video (baseline)")
    assert "meaningless" in printed
    assert main([*argv, *fast]) == 0
    assert "CLIP-Text" not in capsys.readouterr().out  # only on request


def test_run_and_augment_with_metrics_and_filtering(ray_cluster, tmp_path, capsys):
    """On the session's Ray instance: `run --metrics` adds the columns; `augment --max-pixel-mse`
    marks the worse clip 'filtered', keeps its video, leaves it out of augmented.parquet, says so."""
    from fixtures.clips import write_sample_video

    clips = tmp_path / "clips"
    for i in range(2):
        write_sample_video(clips / f"c{i}.mp4", num_frames=3, width=64, height=64, seed=i)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"video": f"clips/c{i}.mp4", "label": i}) + "\n" for i in range(2)))
    fast = ["--model", "tiny", "--size", "64x64", "--steps", "2", "--no-progress", "--clip-model", "tiny"]

    out = tmp_path / "run"
    run = ["run", "--manifest", str(manifest), "--output", str(out), "--prompt", "a red car", *fast]
    assert main([*run, "--metrics"]) == 0
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert all(r[c] is not None for r in rows for c in COLUMNS)
    printed = capsys.readouterr().out
    # The editor actors scored each clip as they wrote it: nothing was left for the driver's pass.
    assert "CLIP-Text ↑" in printed and "metrics for 2 clips (0 computed, 2 up to date)" in printed
    stored = json.loads((out / "metrics" / f"{Path(rows[0]['output']).stem}.json").read_text())
    assert stored["clip_model"] == "tiny" and stored["edit"]["clip_text"] == pytest.approx(rows[0]["clip_text"])

    out = tmp_path / "aug"
    aug = ["augment", "--manifest", str(manifest), "--output", str(out), "--prompt", "{caption}, in the snow", *fast]
    assert main([*aug, "--metrics"]) == 0
    assert len(pq.read_table(out / "augmented.parquet")) == 2
    mse = sorted(pq.read_table(out / "results.parquet").column("pixel_mse").to_pylist())
    capsys.readouterr()

    assert main([*aug, "--max-pixel-mse", str(sum(mse) / 2)]) == 0  # the rerun reuses edits and metrics
    printed = capsys.readouterr().out
    assert "filtered: 1 clips" in printed and "0 computed, 2 up to date" in printed
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["status"] for r in results) == ["filtered", "ok"]
    bad = next(r for r in results if r["status"] == "filtered")
    assert bad["pixel_mse"] == mse[1] and os.path.exists(bad["output"])  # kept on disk
    augmented = pq.read_table(out / "augmented.parquet").to_pylist()
    assert [r["video"] for r in augmented] == [r["output"] for r in results if r["status"] == "ok"]


def test_plain_rerun_keeps_metrics_and_filtered_rows(ray_cluster, tmp_path, capsys):
    """Issue 8 item 6: a plain rerun rebuilds results.parquet from the markers; what `evaluate` and
    `augment --max-pixel-mse` added (metric columns, status 'filtered') stays with the unchanged
    outputs, and `report` keeps showing the metrics."""
    from fixtures.clips import write_sample_video

    clips = tmp_path / "clips"
    for i in range(2):
        write_sample_video(clips / f"c{i}.mp4", num_frames=3, width=64, height=64, seed=i)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"video": f"clips/c{i}.mp4", "label": i}) + "\n" for i in range(2)))
    fast = ["--model", "tiny", "--size", "64x64", "--steps", "2", "--no-progress"]

    out = tmp_path / "run"
    run = ["run", "--manifest", str(manifest), "--output", str(out), "--prompt", "a red car", *fast]
    assert main(run) == 0
    assert main(["evaluate", str(out), "--clip-model", "tiny", "--no-progress"]) == 0
    scored = pq.read_table(out / "results.parquet").to_pylist()
    assert all(r["clip_text"] is not None for r in scored)
    assert main(run) == 0  # nothing to redo
    assert "2 done before this run" in capsys.readouterr().out
    again = pq.read_table(out / "results.parquet")
    assert again.to_pylist() == scored  # metric columns kept, row for row
    assert again.column_names[-1] == "label"  # metrics sit before the labels, as `evaluate` puts them
    assert main(["report", str(out), "--no-progress"]) == 0
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "No metrics yet" not in page and f"{scored[0]['clip_text']:.4f}" in page

    out = tmp_path / "aug"
    aug = ["augment", "--manifest", str(manifest), "--output", str(out), "--prompt", "{caption}, in the snow"]
    assert main([*aug, *fast, "--clip-model", "tiny", "--metrics"]) == 0
    mse = sorted(pq.read_table(out / "results.parquet").column("pixel_mse").to_pylist())
    assert main([*aug, *fast, "--clip-model", "tiny", "--max-pixel-mse", str(sum(mse) / 2)]) == 0
    filtered = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["status"] for r in filtered) == ["filtered", "ok"]
    capsys.readouterr()
    assert main([*aug, *fast]) == 0  # plain rerun: no --metrics, no bound
    assert "1 of 2 videos x prompts ok, 0 failed (2 done before this run)" in capsys.readouterr().out
    assert pq.read_table(out / "results.parquet").to_pylist() == filtered
    assert len(pq.read_table(out / "augmented.parquet")) == 1  # the filtered clip stays out
