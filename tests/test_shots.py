"""Shot cuts: detection on joined toy-world clips, given shot lists, and the editor's split: each shot
edited as a video of its own equals that shot edited alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.clips import moving_shapes, write_sample_frames
from jobs.cli import main
from pipeline.errors import InputError
from pipeline.io.shots import check_shots, detect_shots, parse_shots_flag, shot_ranges
from pipeline.method.editor import EditConfig, Pix2Video
from toyworld.world import random_scene, render

STEPS = 3
ATOL = 2e-4  # batched against one-at-a-time arithmetic (tests/test_reference.py)


def toy(seed: int, frames: int) -> np.ndarray:
    return render(random_scene(seed, size=64, frames=frames)).frames


def test_detects_the_cut_of_two_joined_toy_clips():
    joined = np.concatenate([toy(3_500_000, 16), toy(3_500_001, 16)])
    assert detect_shots(joined) == [0, 16]


@pytest.mark.parametrize("seed", [3_600_000, 3_600_001])
def test_no_cut_in_one_toy_clip(seed):
    assert detect_shots(toy(seed, 32)) == [0]


def test_a_cut_closer_than_min_shot_to_the_last_is_not_taken():
    """A 6-frame insert and a cut back: the cut back is too close to the first (MIN_SHOT_FRAMES), so
    the insert starts a shot that runs on; with a shorter minimum both cuts are found."""
    a = toy(3_500_002, 32)
    joined = np.concatenate([a[:16], toy(3_500_003, 6), a[16:]])
    assert detect_shots(joined) == [0, 16]
    assert detect_shots(joined, min_shot=4) == [0, 16, 22]


def test_given_shots_are_checked():
    assert check_shots([48], 64, "x") == [0, 48]
    assert check_shots([0, 48], 64, "x") == [0, 48]
    assert check_shots(np.array([0, 10]), 64, "x") == [0, 10]
    assert check_shots([], 64, "x") == [0]
    for bad in ([0, 0], [10, 5], [0, 64], [0, 1.5], "0,48", [True], [-1]):
        with pytest.raises(InputError, match="^row 2, column 'shots': "):
            check_shots(bad, 64, "row 2, column 'shots'")
    assert shot_ranges([0, 48], 64) == [(0, 48), (48, 64)]
    assert parse_shots_flag("auto") == "auto" and parse_shots_flag("OFF") == "off"
    assert parse_shots_flag("0,48") == [0, 48]
    with pytest.raises(InputError, match="--shots"):
        parse_shots_flag("sometimes")


@pytest.fixture(scope="module")
def editor(tiny_model_dir) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    return Pix2Video(load_diffusion_models(str(tiny_model_dir), device="cpu"))


def _depth(frames: np.ndarray) -> list[np.ndarray]:
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None, :]
    return [ramp + f[::2, ::2].mean(-1).astype(np.float32) / 255 for f in frames]


@pytest.mark.parametrize("reverse", [False, True])
def test_each_shot_is_edited_as_if_alone(editor, reverse):
    """A joined clip split at its cut: each shot's latents equal that shot edited on its own (its own
    anchor, its own inversion and source prompt), and differ from the clip edited as one shot."""
    a, b = moving_shapes(3, 64, 64, seed=1), moving_shapes(4, 64, 64, seed=2)
    frames = np.concatenate([a, b])
    config = EditConfig(steps=STEPS, reverse=reverse, schedule="wavefront")
    prompts = ["a red ball", "snow"]

    video = editor.prepare(frames, _depth(frames), video_id="joined")
    shots = editor.invert_shots(video, [0, 3], ["shapes", "other shapes"], config)
    (split,) = editor.edit_shots([[(shot, zT, prompts) for shot, zT in shots]], config)

    for (start, stop), source in (((0, 3), "shapes"), ((3, 7), "other shapes")):
        alone = editor.prepare(frames[start:stop], _depth(frames[start:stop]), video_id="joined")
        want = editor.edit(alone, editor.invert(alone, source, config), prompts, config)
        for got, expected in zip(split, want, strict=True):
            torch.testing.assert_close(got[start:stop], expected, atol=ATOL, rtol=1e-4)

    whole = editor.edit(video, editor.invert(video, "shapes", config), prompts, config)
    later = slice(3, 7) if not reverse else slice(0, 3)  # the shot that is not the clip's anchor shot
    assert (whole[0][later] - split[0][later]).abs().max() > 20 * ATOL


def test_edit_shots_reports_frames_of_the_clip(editor):
    frames = moving_shapes(5, 64, 64, seed=3)
    video = editor.prepare(frames, _depth(frames))
    config = EditConfig(steps=1)
    shots = editor.invert_shots(video, [0, 2], ["x", "y"], config)
    seen = []
    editor.edit_shots([[(s, z, ["p"]) for s, z in shots]], config, on_frame_done=lambda c, p, f: seen.append(f))
    assert sorted(seen) == [0, 1, 2, 3, 4]
    with pytest.raises(InputError, match="source prompts"):
        editor.invert_shots(video, [0, 2], ["x"], config)


def test_edit_cli_with_given_shots(tmp_path, capsys):
    folder = tmp_path / "frames"
    write_sample_frames(folder, num_frames=4, width=64, height=64, seed=1)
    out = tmp_path / "edited"
    fast = ["--model", "tiny", "--steps", "2", "--size", "64x64", "--no-progress"]
    assert main(["edit", str(folder), "-o", str(out), "--prompt", "a red car", "--shots", "0,2", *fast]) == 0
    printed = capsys.readouterr().out
    assert "shots: 2, first frames [0, 2]" in printed
    assert "source prompt of frames 2-3" in printed  # each shot captioned on its own anchor
    assert len(list(out.iterdir())) == 4
    assert main(["edit", str(folder), "-o", str(out), "--prompt", "x", "--shots", "0,9", *fast]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--shots" in err and "outside the clip" in err
