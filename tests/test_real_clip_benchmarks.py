"""The real-clip benchmarks (long_video.py, masked_edit.py, shot_edits.py) at test scale: the tiny model,
short toy clips, one or two steps; the pictures are noise-like, so what is checked is the tables, the
JSON, and what holds whatever the model draws."""

from __future__ import annotations

import json


def test_long_video_script_scores_every_window(tmp_path, capsys, tiny_model_dir, benchmark_script):
    out = tmp_path / "long.json"
    argv = ["--model", "tiny", "--lengths", "4,8", "--refresh", "0,4", "--window", "4", "--steps", "1"]
    assert benchmark_script("long_video").main([*argv, "--size", "64", "--seeds", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Edit accuracy per window" in printed and "Warp error per window" in printed
    assert "| 8 | 4 |" in printed and "| input |" in printed
    data = json.loads(out.read_text())
    clips = {(c["frames"], c["anchor_refresh"]): c for c in data["clips"]}
    assert set(clips) == {(4, 0), (4, 4), (8, 0), (8, 4)}
    assert [w["start"] for w in clips[8, 4]["windows"]] == [0, 4]
    assert all({"accuracy", "warp", "input_warp"} <= set(w) for c in data["clips"] for w in c["windows"])
    assert len({c["target"] for c in data["clips"]}) == 1  # every length: the same edit of the same scene
    assert clips[4, 0]["windows"][0]["input_warp"] == clips[8, 0]["windows"][0]["input_warp"]  # its first frames
    capsys.readouterr()
    assert benchmark_script("long_video").main([*argv, "--tables-from", str(out), str(out)]) == 0
    assert "2 held-out scenes" in capsys.readouterr().out


def test_masked_edit_script_keeps_the_outside(tmp_path, capsys, tiny_model_dir, benchmark_script):
    module = benchmark_script("masked_edit")
    out = tmp_path / "masked.json"
    argv = ["--model", "tiny", "--frames", "4", "--steps", "1", "--size", "64", "--seeds", "1", "--output", str(out)]
    assert module.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| masked |" in printed and "| unmasked |" in printed
    (clip,) = json.loads(out.read_text())["clips"]
    assert clip["masked"]["psnr_beyond_feather"] == float("inf")  # the composite keeps the input exactly
    assert clip["unmasked"]["psnr_outside"] < clip["masked"]["psnr_outside"]


def test_shot_edits_script_edits_each_shot_as_if_alone(tmp_path, capsys, tiny_model_dir, benchmark_script):
    out = tmp_path / "shots.json"
    argv = ["--model", "tiny", "--frames", "6", "--steps", "2", "--size", "64", "--pairs", "1", "--output", str(out)]
    assert benchmark_script("shot_edits").main(argv) == 0
    assert "| second (cut to end) |" in capsys.readouterr().out
    (pair,) = json.loads(out.read_text())["pairs"]
    assert pair["shots"] == [0, 6]
    first, second = pair["per_shot"]
    # split vs alone: float order only (measured: at most 1 grey level after rounding)
    assert first["split_vs_alone_max"] <= 2 and second["split_vs_alone_max"] <= 2
    # one shot paints the second clip from the first's anchor (measured: 107 levels at most)
    assert second["one_shot_vs_alone_max"] > 20
