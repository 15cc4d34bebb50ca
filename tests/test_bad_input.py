"""Bad input to `edit` and `run` (issue 8, items 1, 2, 10, 11): one line naming the input, flag or file,
exit 2, before any model is loaded; nothing the user owns is lost or half-written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fixtures.clips import write_sample_frames, write_sample_video
from jobs.cli import main
from pipeline.errors import InputError
from pipeline.io.video import read_frames, write_frames_folder

RUN = ["--model", "tiny", "--steps", "1", "--size", "64x64", "--no-progress"]
FAST = [*RUN, "--source-prompt", "shapes"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_video(tmp_path_factory.mktemp("in") / "clip.mp4", num_frames=2, width=64, height=64)


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    return write_sample_frames(tmp_path / "frames", num_frames=2, width=64, height=64, seed=1)


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: every refusal here must come before that."""

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr("pipeline.models.loading.load_diffusion_models", loaded)


@pytest.fixture
def no_work(no_models: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nor is the input read: output and flag checks come first."""

    def read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input was read before the bad output or flag was refused")

    monkeypatch.setattr("pipeline.io.video.read_frames", read)


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: object, verb: str = "edit") -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"pix2video {verb}: error:"), err
    for needle in needles:
        assert str(needle) in err, err
    return err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. an output folder that holds the user's files -----------------------------------------------


def test_edit_into_a_folder_of_other_files_keeps_them(capsys, tmp_path, clip, no_work) -> None:
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "sub" / "photo.png").write_bytes(b"my photo")
    before = _tree(out)
    argv = ["edit", str(clip), "-o", str(out), "--prompt", "x", *FAST]
    _refused(capsys, argv, out, "not this edit's frames", "notes.txt", "sub")
    assert _tree(out) == before and (out / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary left either


def test_write_frames_folder_never_deletes_what_it_did_not_write(tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"the user's, not a frame of this edit")
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="holiday.png"):
        write_frames_folder(out, [frame], ["000000"])
    assert sorted(p.name for p in out.iterdir()) == ["holiday.png"]
    assert (out / "holiday.png").read_bytes() == b"the user's, not a frame of this edit"


def test_edit_replaces_its_own_earlier_output_folder(capsys, tmp_path, clip, frames) -> None:
    out = tmp_path / "edited"
    argv = ["edit", str(clip), "-o", str(out), "--prompt", "x", *FAST]
    assert main(argv) == 0
    first = read_frames(out).frames
    assert main([*argv, "--guidance-scale", "2"]) == 0  # the same folder again: replaced
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]
    assert not np.array_equal(read_frames(out).frames, first)
    capsys.readouterr()
    # Frames of another input (other names) are not this edit's to delete: refused, nothing touched.
    for i, png in enumerate(sorted(frames.iterdir())):
        png.rename(frames / f"shot-{i}.png")
    before = _tree(out)
    _refused(capsys, ["edit", str(frames), "-o", str(out), "--prompt", "x", *FAST], "000000.png")
    assert _tree(out) == before
    (out / "keep.txt").write_text("added by the user")  # now it holds something of the user's
    _refused(capsys, argv, "keep.txt")
    assert (out / "keep.txt").read_text() == "added by the user" and (out / "000000.png").exists()


# -- 2. the output is the input -------------------------------------------------------------------


def test_output_equal_to_the_input_video_is_refused(capsys, tmp_path, no_work) -> None:
    video = write_sample_video(tmp_path / "clip.mp4", num_frames=2, width=64, height=64)
    before = video.read_bytes()
    for out in (video, tmp_path / "." / "clip.mp4"):
        _refused(capsys, ["edit", str(video), "-o", str(out), "--prompt", "x", *FAST], "is the input")
    assert video.read_bytes() == before


def test_output_equal_to_the_input_or_depth_folder_is_refused(capsys, tmp_path, frames, no_work) -> None:
    before = _tree(frames)
    _refused(capsys, ["edit", str(frames), "-o", str(frames), "--prompt", "x", *FAST], "is the input")
    depth = tmp_path / "depth"
    depth.mkdir()
    argv = ["edit", str(frames), "-o", str(depth), "--prompt", "x", "--depth", str(depth), *FAST]
    _refused(capsys, argv, "is the input", depth)
    assert _tree(frames) == before


# -- 10. non-finite numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("--guidance-scale", "nan"), ("--update-weight", "inf")])
def test_non_finite_flags_are_refused(capsys, tmp_path, clip, no_work, flag, value) -> None:
    out = tmp_path / "out.mp4"
    _refused(capsys, ["edit", str(clip), "-o", str(out), "--prompt", "x", *FAST, flag, value], flag, value)
    argv = ["run", "--manifest", str(clip.parent), "--output", str(tmp_path / "run"), "--prompt", "x", *RUN]
    _refused(capsys, [*argv, flag, value], flag, verb="run")
    assert not out.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("value", "needle"),
    [(np.inf, "non-finite"), (np.nan, "non-finite"), (1e39, "non-finite"), (1 + 2j, "complex")],
    ids=["inf", "nan", "beyond-float32", "complex"],
)
def test_bad_depth_map_names_the_file(capsys, tmp_path, frames, no_models, value, needle) -> None:
    depth = tmp_path / "depth"
    depth.mkdir()
    names = sorted(p.stem for p in frames.iterdir())
    for name in names:
        np.save(depth / f"{name}.npy", np.ones((16, 16)))
    bad = np.ones((16, 16), dtype=np.complex128 if isinstance(value, complex) else np.float64)
    bad[3, 4] = value
    np.save(depth / f"{names[1]}.npy", bad)
    out = tmp_path / "out.mp4"
    argv = ["edit", str(frames), "-o", str(out), "--prompt", "x", "--depth", str(depth), *FAST]
    _refused(capsys, argv, f"{names[1]}.npy", needle)
    assert not out.exists()


# -- 11. usage errors that were tracebacks --------------------------------------------------------


def test_webm_output_is_refused_before_the_edit(capsys, tmp_path, clip, no_work) -> None:
    _refused(capsys, ["edit", str(clip), "-o", str(tmp_path / "o.webm"), "--prompt", "x", *FAST], ".webm", ".mp4")


def test_output_under_a_file_or_in_a_read_only_place(capsys, tmp_path, clip, no_work) -> None:
    (tmp_path / "file.txt").write_text("a file")
    argv = ["edit", str(clip), "--prompt", "x", *FAST, "-o"]
    _refused(capsys, [*argv, str(tmp_path / "file.txt" / "out.mp4")], "file.txt", "is a file")
    _refused(capsys, [*argv, str(tmp_path / "file.txt" / "deeper" / "frames")], "is a file")
    _refused(capsys, [*argv, "/sys/pix2video-out.mp4"], "cannot write in /sys")  # read-only, even for root
    _refused(capsys, [*argv, "foo://bucket/out.mp4"], "foo://", "not a URL")
    assert (tmp_path / "file.txt").read_text() == "a file"
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--max-frames", "0"], "--max-frames"), (["--size", "64000x64000"], "64000x64000")],
    ids=["max-frames-0", "huge-size"],
)
def test_bad_numbers_are_refused_before_work(capsys, tmp_path, clip, no_work, flags, needle) -> None:
    out = tmp_path / "out.mp4"
    _refused(capsys, ["edit", str(clip), "-o", str(out), "--prompt", "x", *FAST, *flags], needle)
    argv = ["run", "--manifest", str(clip.parent), "--output", str(tmp_path / "run"), "--prompt", "x", *RUN]
    _refused(capsys, [*argv, *flags], needle, verb="run")


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ("steps: 2.5", ["steps", "whole number", "2.5"]),
        ("prompt: 123", ["prompt", "text", "123"]),
        ('reverse: "no"', ["reverse", "true or false", "'no'"]),
        ("dtype: float64", ["dtype", "float32", "float64"]),
        ("guidance_scale: [1, 2]", ["guidance_scale", "a number"]),
    ],
    ids=["float-steps", "number-prompt", "quoted-no", "bad-choice", "list-number"],
)
def test_config_values_of_the_wrong_type(capsys, tmp_path, clip, no_work, line, needles) -> None:
    config = tmp_path / "c.yaml"
    base = "prompt: a car\n" if not line.startswith("prompt") else ""
    config.write_text(base + line + "\n")
    argv = ["edit", str(clip), "-o", str(tmp_path / "out.mp4"), *FAST, "--config", str(config)]
    _refused(capsys, argv, "config file", *needles)


def test_config_values_of_the_right_type_still_work(tmp_path) -> None:
    from jobs.cli import build_parser

    config = tmp_path / "c.yaml"
    config.write_text("steps: 3\nguidance_scale: 5\nreverse: true\nvideos_per_call: 2\nprompt: [a, b]\n")
    argv = ["--manifest", "m.csv", "--output", "o", "--config", str(config)]
    args = build_parser("run").parse_args(argv)
    assert (args.steps, args.guidance_scale, args.reverse, args.videos_per_call) == (3, 5.0, True, "2")
    assert args.prompt == ["a", "b"] and isinstance(args.guidance_scale, float)


def test_unknown_url_protocols_are_one_line(capsys, tmp_path, clip) -> None:
    argv = ["run", "--prompt", "x", *RUN]
    bad_manifest = ["--manifest", "foo://bucket/m.parquet", "--output", str(tmp_path / "o")]
    _refused(capsys, [*argv, *bad_manifest], "foo://bucket/m.parquet", "unknown protocol", verb="run")
    out = "foo://bucket/out"
    _refused(capsys, [*argv, "--manifest", str(clip.parent), "--output", out], out, "unknown protocol", verb="run")
    assert not os.path.exists("foo:")


def test_run_output_under_a_file_or_read_only_is_refused_before_ray(capsys, tmp_path, clip, monkeypatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started before the bad output was refused")

    monkeypatch.setattr("jobs._common.connect_ray", started)
    (tmp_path / "file.txt").write_text("a file")
    argv = ["run", "--manifest", str(clip.parent), "--prompt", "x", *RUN, "--output"]
    _refused(capsys, [*argv, str(tmp_path / "file.txt" / "run")], "--output", "is a file", verb="run")
    _refused(capsys, [*argv, "/sys/pix2video-run"], "--output", "cannot write in /sys", verb="run")
    assert (tmp_path / "file.txt").read_text() == "a file"
