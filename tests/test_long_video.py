"""benchmarks/long_video.py at test scale: the tiny model, short toy clips, one step; the figures are
meaningless here (noise-like pictures), the tables and the per-window JSON are what is checked."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("long_video", ROOT / "benchmarks" / "long_video.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_long_video_script_scores_every_window(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "long.json"
    argv = ["--model", "tiny", "--lengths", "4,8", "--refresh", "0,4", "--window", "4", "--steps", "1"]
    assert _script().main([*argv, "--size", "64", "--seeds", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Edit accuracy per window" in printed and "Warp error per window" in printed
    assert "| 8 | 4 |" in printed and "| input |" in printed
    data = json.loads(out.read_text())
    clips = {(c["frames"], c["anchor_refresh"]): c for c in data["clips"]}
    assert set(clips) == {(4, 0), (4, 4), (8, 0), (8, 4)}
    assert [w["start"] for w in clips[8, 4]["windows"]] == [0, 4]
    assert all({"accuracy", "warp", "input_warp"} <= set(w) for c in data["clips"] for w in c["windows"])


def test_masked_edit_script_keeps_the_outside(tmp_path, capsys, tiny_model_dir):
    spec = importlib.util.spec_from_file_location("masked_edit", ROOT / "benchmarks" / "masked_edit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "masked.json"
    argv = ["--model", "tiny", "--frames", "4", "--steps", "1", "--size", "64", "--seeds", "1", "--output", str(out)]
    assert module.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| masked |" in printed and "| unmasked |" in printed
    (clip,) = json.loads(out.read_text())["clips"]
    assert clip["masked"]["psnr_beyond_feather"] == float("inf")  # the composite keeps the input exactly
    assert clip["unmasked"]["psnr_outside"] < clip["masked"]["psnr_outside"]
