"""`pix2video edit` end to end on generated data, and every bad input it must refuse cleanly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fixtures.clips import write_sample_frames, write_sample_video
from jobs.cli import main
from pipeline.io.video import read_frames

FAST = ["--model", "tiny", "--steps", "2", "--size", "64x64", "--no-progress"]


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory) -> Path:
    return write_sample_video(tmp_path_factory.mktemp("in") / "clip.mp4", num_frames=4, width=96, height=64, fps=12.0)


@pytest.fixture(scope="module")
def sample_frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames") / "frames"
    write_sample_frames(folder, num_frames=3, width=64, height=64, seed=1)
    return folder


def test_edit_video_to_mp4(tmp_path, sample_video, capsys):
    out = tmp_path / "edited.mp4"
    assert main(["edit", str(sample_video), "-o", str(out), "--prompt", "a red car", *FAST]) == 0
    clip = read_frames(out)
    assert clip.frames.shape == (4, 64, 64, 3)
    assert clip.fps == pytest.approx(12.0)
    printed = capsys.readouterr().out
    assert "source prompt (caption of the anchor frame):" in printed  # no --source-prompt: captioned
    assert str(out) in printed
    assert [p.name for p in tmp_path.iterdir()] == ["edited.mp4"]  # no temporary leftovers


def test_edit_frame_folder_with_depth_to_pngs(tmp_path, sample_frames, capsys):
    depth = tmp_path / "depth"
    depth.mkdir()
    names = sorted(p.stem for p in sample_frames.iterdir())
    for i, name in enumerate(names):
        np.save(depth / f"{name}.npy", np.outer(np.arange(40), np.ones(30)).astype(np.float32) + i)
    out = tmp_path / "edited"
    argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "a red car", "--depth", str(depth)]
    assert main([*argv, "--source-prompt", "shapes", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.png" for n in names]
    clip = read_frames(out)
    assert clip.frames.shape == (3, 64, 64, 3) and clip.frames.std() > 0
    assert "caption" not in capsys.readouterr().out


def test_edit_is_deterministic_and_honours_the_switches(tmp_path, sample_frames):
    def edit(name, *extra):
        out = tmp_path / name
        argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "a red car", "--source-prompt", "shapes"]
        assert main([*argv, *FAST, *extra]) == 0
        return read_frames(out).frames

    a, b = edit("a"), edit("b")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, edit("c", "--injection", "none", "--no-latent-update"))
    assert np.abs(a.astype(int) - edit("d", "--schedule", "sequential").astype(int)).max() <= 1


def test_config_file_supplies_flags(tmp_path, sample_frames):
    config = tmp_path / "edit.yaml"
    config.write_text("prompt: a red car\nsource_prompt: shapes\nmodel: tiny\nsteps: 2\nsize: 64x64\nprogress: false\n")
    out = tmp_path / "edited"
    assert main(["edit", str(sample_frames), "-o", str(out), "--config", str(config)]) == 0
    assert len(list(out.iterdir())) == 3


def _refused(capsys, argv, *needles) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("pix2video edit: error:")
    for needle in needles:
        assert str(needle) in err, err


@pytest.fixture
def bad(tmp_path):
    """Paths for bad inputs, and a check that nothing was written for OUTPUT."""
    out = tmp_path / "out.mp4"
    yield tmp_path, out
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_missing_video(capsys, bad):
    tmp, out = bad
    missing = tmp / "nope.mp4"
    _refused(capsys, ["edit", str(missing), "-o", str(out), "--prompt", "x", *FAST], missing)


def test_corrupt_video(capsys, bad):
    tmp, out = bad
    corrupt = tmp / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    _refused(capsys, ["edit", str(corrupt), "-o", str(out), "--prompt", "x", *FAST], corrupt)


def test_empty_video_file(capsys, bad):
    tmp, out = bad
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    _refused(capsys, ["edit", str(empty), "-o", str(out), "--prompt", "x", *FAST], empty)


def test_unreadable_video(capsys, bad, sample_video):
    tmp, out = bad
    locked = tmp / "locked.mp4"
    locked.write_bytes(sample_video.read_bytes())
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: a folder named like a video is unreadable as one
        locked.chmod(0o644)
        locked.unlink()
        locked.mkdir()
    _refused(capsys, ["edit", str(locked), "-o", str(out), "--prompt", "x", *FAST], locked)


def test_folder_without_images(capsys, bad):
    tmp, out = bad
    folder = tmp / "nothing"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    _refused(capsys, ["edit", str(folder), "-o", str(out), "--prompt", "x", *FAST], folder)


def test_folder_with_frames_of_different_sizes(capsys, bad):
    from PIL import Image

    tmp, out = bad
    folder = tmp / "mixed"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    Image.new("RGB", (32, 64)).save(folder / "b.png")
    _refused(capsys, ["edit", str(folder), "-o", str(out), "--prompt", "x", *FAST], "b.png")


def test_depth_missing_for_some_frames(capsys, bad, sample_frames):
    tmp, out = bad
    depth = tmp / "depth"
    depth.mkdir()
    np.save(depth / "000000.npy", np.ones((8, 8), np.float32))
    argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "x", "--depth", str(depth), *FAST]
    _refused(capsys, argv, "000001.npy")


def test_depth_unreadable(capsys, bad, sample_frames):
    tmp, out = bad
    depth = tmp / "depth"
    depth.mkdir()
    for name in ("000000", "000001", "000002"):
        (depth / f"{name}.npy").write_bytes(b"not numpy")
    argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "x", "--depth", str(depth), *FAST]
    _refused(capsys, argv, "000000.npy")


def test_unknown_model(capsys, bad, sample_frames, monkeypatch):
    tmp, out = bad
    argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "x", *FAST, "--model", "nobody/no-such-model"]
    _refused(capsys, argv, "nobody/no-such-model")
    missing = tmp / "no-folder"
    _refused(capsys, [*argv[:-1], str(missing)], missing)


def test_empty_prompt(capsys, bad, sample_frames):
    _, out = bad
    _refused(capsys, ["edit", str(sample_frames), "-o", str(out), "--prompt", "  ", *FAST], "--prompt")


def test_size_not_a_multiple_of_64(capsys, bad, sample_frames):
    _, out = bad
    argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "x", *FAST, "--size", "100x64"]
    _refused(capsys, argv, "100x64")


def test_failed_edit_leaves_existing_output_untouched(capsys, tmp_path, sample_frames):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    _refused(capsys, ["edit", str(sample_frames), "-o", str(out), "--prompt", " ", *FAST])
    assert out.read_bytes() == b"previous result"


def test_bench_prints_the_figures(capsys):
    argv = ["bench", "--model", "tiny", "--frames", "2", "--steps", "3", "--size", "64x64", "--schedule", "sequential"]
    assert main(argv) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("seconds_per_frame", "inversion_s", "edit_s", "decode_s", "feature_store_bytes", "peak_memory_bytes"):
        assert figures[key] > 0, key
    # inversion: conditional branch only; editing: two guidance branches per step
    assert figures["unet_image_forwards_per_frame"] == 3 * 3
    assert figures["unet_calls"] == 2 * 3


def test_bfloat16_edit_runs_on_cpu(tmp_path, sample_frames):
    out = tmp_path / "bf16"
    argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "a red car", "--source-prompt", "shapes"]
    assert main([*argv, *FAST, "--dtype", "bfloat16"]) == 0
    frames = read_frames(out).frames
    assert frames.shape == (3, 64, 64, 3) and frames.std() > 0


def test_cuda_without_a_gpu_is_refused(capsys, bad, sample_frames):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    _, out = bad
    argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "x", *FAST, "--device", "cuda"]
    _refused(capsys, argv, "cuda")


def test_update_last_step_changes_the_edit(tmp_path, sample_frames):
    def edit(name, *extra):
        out = tmp_path / name
        argv = ["edit", str(sample_frames), "-o", str(out), "--prompt", "a red car", "--source-prompt", "shapes"]
        assert main([*argv, *FAST, "--steps", "4", *extra]) == 0
        return read_frames(out).frames

    default = edit("default")
    assert np.array_equal(default, edit("same", "--update-last-step", "2"))  # steps // 2 is the default
    assert not np.array_equal(default, edit("never", "--update-last-step", "-1"))
