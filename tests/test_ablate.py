"""`pix2video ablate`: every variant of docs/METHOD.md on one tiny video, Table 1 printed and written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fixtures.clips import write_sample_video
from jobs.ablate import INJECTIONS, variants
from jobs.cli import main
from pipeline.errors import InputError
from pipeline.io.video import read_frames

FAST = ["--model", "tiny", "--clip-model", "tiny", "--steps", "2", "--size", "64x64", "--no-progress"]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, tiny_model_dir) -> tuple[Path, str]:
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("ablate")
    video = write_sample_video(folder / "clip.mp4", num_frames=3, width=64, height=64)
    out = folder / "table"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["ablate", str(video), "--prompt", "a red car", "--source-prompt", "shapes", "-o", str(out), *FAST])
    assert code == 0
    return out, printed.getvalue()


def test_every_variant_is_in_the_printed_and_written_tables(ablation):
    out, printed = ablation
    labels = ["input video"] + [v.label for v in variants(",".join(INJECTIONS), "both")]
    labels.append("per-frame SDEdit (strength 0.8)")
    assert len(labels) == 12  # baseline + 5 injections x update on/off + the per-frame SDEdit baseline
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if "CLIP-Text ↑" in line)
    assert "CLIP-Image ↑" in lines[header] and "Pixel-MSE ↓" in lines[header]
    assert [line.split("  ")[0].strip() for line in lines[header + 1 : header + 13]] == labels
    assert "meaningless" in printed

    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == labels
    assert all(float(r["clip_image"]) <= 1.0 + 1e-6 and float(r["pixel_mse"]) >= 0 for r in rows)
    markdown = (out / "table.md").read_text()
    assert markdown.count("\n| ") == 13 and "| anchor+prev, update |" in markdown
    report = json.loads((out / "table.json").read_text())
    assert report["config"]["steps"] == 2 and report["source_prompt"] == "shapes"
    assert [r["variant"] for r in report["rows"]] == labels
    assert len(report["rows"][1]["per_frame"]["clip_text"]) == 3
    assert report["rows"][-1]["sdedit_strength"] == 0.8 and report["rows"][-1]["output"] == "sdedit.mp4"


def test_each_variant_wrote_its_own_video(ablation):
    out, _ = ablation
    report = json.loads((out / "table.json").read_text())
    videos = {r["variant"]: read_frames(out / r["output"]).frames for r in report["rows"][1:]}
    assert len(videos) == 11 and all(v.shape == (3, 64, 64, 3) for v in videos.values())
    method, per_frame = videos["anchor+prev, update"], videos["none, no update"]
    assert not np.array_equal(method[1:], per_frame[1:])  # injection and update change the later frames
    assert not np.array_equal(videos["per-frame SDEdit (strength 0.8)"], per_frame)  # no inversion: fresh noise
    assert not np.array_equal(videos["anchor+prev, update"], videos["anchor+prev, no update"])


def test_variant_grid_and_bad_names():
    assert [v.label for v in variants("none,anchor", "off")] == ["none, no update", "anchor, no update"]
    assert [v.slug for v in variants("anchor+prev", "both")] == ["anchor-prev__update", "anchor-prev__no-update"]
    with pytest.raises(InputError, match="--injections"):
        variants("anchor,sideways", "both")


def test_bad_injection_is_refused_before_any_work(tmp_path, capsys):
    video = write_sample_video(tmp_path / "clip.mp4", num_frames=2, width=64, height=64)
    assert main(["ablate", str(video), "--prompt", "x", "--injections", "sideways", *FAST]) == 2
    err = capsys.readouterr().err
    assert "--injections" in err and len(err.strip().splitlines()) == 1


def test_bad_sdedit_strength_is_refused_before_any_work(tmp_path, capsys):
    video = write_sample_video(tmp_path / "clip.mp4", num_frames=2, width=64, height=64)
    assert main(["ablate", str(video), "--prompt", "x", "--sdedit-strength", "1.5", *FAST]) == 2
    err = capsys.readouterr().err
    assert "--sdedit-strength" in err and len(err.strip().splitlines()) == 1
