"""benchmarks/gpu_check.py in its CPU smoke mode: every step of the GPU check at tiny sizes, its JSON
lines with the keys and values a GPU session will read (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cpu_smoke_writes_every_figure(ray_cluster, tmp_path, capsys, benchmark_script):
    """On the session's Ray instance (the check's `run` reuses a connected driver's)."""
    gpu_check = benchmark_script("gpu_check")
    status = gpu_check.main(["--out", str(tmp_path), "--cpu-smoke"])
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    by_step: dict[str, list[dict]] = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r)
    assert status == 0, [r for r in records if r.get("ok") is False]
    assert all(r["ok"] is True for r in records)

    (env,) = by_step["env"]
    assert env["mode"] == "cpu-smoke" and env["device"] == "cpu" and env["torch"]

    assert [r["dtype"] for r in by_step["cuda_path"]] == ["float32", "bfloat16"]
    for r in by_step["cuda_path"]:
        assert r["store_tensors"] == [f"cpu/torch.{r['dtype']}"] and r["store_bytes"] > 0 and not r["problems"]

    (run,) = by_step["ray_run"]
    assert run["exit"] == 0 and [row["status"] for row in run["rows"]] == ["ok"]
    assert "--device cpu" in run["command"] and "--model tiny" in run["command"]

    bench = by_step["bench"]
    assert sorted((r["schedule"], r["prompts"]) for r in bench) == [
        ("sequential", 1), ("sequential", 4), ("wavefront", 1), ("wavefront", 4)
    ]  # fmt: skip
    for r in bench:
        assert set(gpu_check.BENCH_KEYS) <= set(r)
        assert 0 < r["seconds_per_frame"] < 60 and r["peak_memory_bytes"] > 0 and r["feature_store_bytes"] > 0
        assert r["gpu_busy_share"] is None and r["gpu_busy_source"] is None  # no GPU to sample
        assert r["speedup_vs_first"] > 0 and r["frames"] == 3 and r["size"] == "64x64"
    # The store holds the anchor and one rolling slot per prompt: 4 prompts, 4 times the bytes.
    store = {(r["schedule"], r["prompts"]): r["feature_store_bytes"] for r in bench}
    assert store[("wavefront", 4)] == 4 * store[("wavefront", 1)] == 4 * store[("sequential", 1)]

    speed = by_step["speed"]
    assert [r["variant"] for r in speed] == [name for name, _ in gpu_check.SMOKE_VARIANTS]
    for r in speed:
        # step caching is an approximation: its frames differ by design, and it saves UNet FLOPs
        cached = r["cache_interval"] > 1
        assert (r["max_pixel_diff_vs_all_off"] <= 1) != cached and r["speedup_vs_all_off"] > 0
        assert (r["flops_reduction_vs_all_off"] > 1.2) == cached
    assert speed[0]["max_pixel_diff_vs_all_off"] == 0 and speed[0]["speedup_vs_all_off"] == 1
    assert {r["speed_attention"] for r in speed} == {"auto", "math"}
    assert [r["speed_channels_last"] for r in speed] == [False, False, True, False]
    assert [r["cache_interval"] for r in speed] == [0, 0, 0, 3]

    # The summary table, last, and its copy in the output folder.
    summary = (tmp_path / "gpu_check_summary.txt").read_text()
    assert "wavefront x4 prompts" in summary and "channels-last" in summary and summary.strip() in printed


def test_script_runs_the_check_with_the_project_python(tmp_path):
    """The shell entry point: no carried wheels here, so it runs the check (env step only: fast)."""
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--cpu-smoke", "--only", "env"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    (env,) = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert env["step"] == "env" and env["ok"] and env["mode"] == "cpu-smoke"
    assert (tmp_path / "gpu_check.log").read_text().count('"step": "env"') == 1


def test_speed_step_variants_rounds_and_workload(tmp_path, benchmark_script):
    """`--variants` (exact names, all off first), `--speed-rounds` (each round against its own all off)
    and `--speed-workload` (bench flags that replace the step's), as the CPU measurement uses them."""
    import pytest

    gpu_check = benchmark_script("gpu_check")
    argv = ["--out", str(tmp_path), "--cpu-smoke", "--only", "speed", "--variants", "attention flash"]
    argv += ["--speed-rounds", "2", "--speed-workload", "--frames 2 --steps 2"]
    assert gpu_check.main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    speed = [r for r in records if r["step"] == "speed"]
    assert [(r["variant"], r["round"]) for r in speed] == [
        ("all off", 0), ("attention flash", 0), ("all off", 1), ("attention flash", 1)
    ]  # fmt: skip
    assert all(r["ok"] and r["frames"] == 2 and r["steps"] == 2 for r in speed)
    assert speed[2]["speedup_vs_all_off"] == 1  # round 2's all off is its own baseline
    assert speed[2]["max_pixel_diff_vs_all_off"] == 0  # and gives round 1's frames exactly
    assert all(r["max_pixel_diff_vs_all_off"] <= 1 for r in speed)
    assert {r["speed_attention"] for r in speed} == {"auto", "flash"}
    with pytest.raises(SystemExit):  # an unknown name fails before any step runs
        gpu_check.main(["--out", str(tmp_path / "x"), "--cpu-smoke", "--variants", "turbo"])
    assert not (tmp_path / "x").exists()


def test_speed_step_in_fresh_processes(tmp_path, benchmark_script):
    """`--speed-fresh` (the GPU default): each variant through `python -m jobs.bench` in a process of its
    own, its switches and frames read back from it."""
    gpu_check = benchmark_script("gpu_check")
    argv = ["--out", str(tmp_path), "--cpu-smoke", "--only", "speed", "--variants", "attention math"]
    argv += ["--speed-fresh", "--speed-workload", "--frames 2 --steps 2"]
    assert gpu_check.main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    speed = [r for r in records if r["step"] == "speed"]
    assert [(r["variant"], r["speed_attention"], r["frames"]) for r in speed] == [
        ("all off", "auto", 2), ("attention math", "math", 2)
    ]  # fmt: skip
    assert speed[1]["max_pixel_diff_vs_all_off"] <= 1 and speed[1]["cpu_seconds_per_frame"] > 0
