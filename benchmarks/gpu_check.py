"""The GPU check (issue 19): one command that exercises the CUDA path and measures the editor.

    bash benchmarks/gpu_check.sh [OUT]              # installs carried wheels, then runs this
    python benchmarks/gpu_check.py --out DIR        # on a GPU
    python benchmarks/gpu_check.py --out DIR --cpu-smoke   # the same steps at tiny sizes (a test)

Steps, each one JSON line (or several) in OUT/gpu_check.jsonl, in this order:

1. `env`: Python, torch, CUDA, the GPU, package versions.
2. `cuda_path`: the tiny model on the device in float32, bfloat16 and float16, in this process:
   prepare, invert, edit (wavefront, 2 prompts), SDEdit, decode; checks that latents, depth and the
   feature store live on the device in the model's dtype, and that the frames are finite uint8.
3. `ray_run`: `pix2video run --device cuda --model tiny` on a generated clip through a local Ray
   instance; the results row must say ok.
4. `bench`: `pix2video bench --model random-sd2 --size 512x512 --dtype bfloat16 --frames 16
   --steps 50 --schedule sequential,wavefront` for `--prompts 1` and `--prompts 4` (each schedule in a
   fresh process): seconds per output frame, peak GPU memory, the feature store's bytes, the GPU's busy
   share while editing (pynvml's utilization.gpu, polled every 0.1 s; see jobs/bench.py).
5. `speed`: each speed option on against all off, on a smaller workload (random-sd2, 512², bf16,
   8 frames, 20 steps, wavefront, 1 prompt), each in a fresh process that is stopped when the time
   budget runs out (the CPU smoke run: in this process): seconds per frame (wall clock and CPU), the
   ratios to all off, warm-up (compile) seconds, and the largest pixel difference from the all-off
   frames, UNet GFLOPs per frame (FlopCounterMode; jobs/bench.py). Also step caching (its frames differ
   by design: an approximation, measured for quality on the toy world in BENCHMARKS.md, "Step caching").
   `--speed-workload`, `--variants` and `--speed-rounds` size it for a CPU measurement
   (BENCHMARKS.md, "Speed options").

A step that fails is a record with "ok": false and the error; the check goes on. Steps run until the
time budget (`--budget-s`, 450 s on a GPU) is spent; what is left is recorded as skipped. A summary
table is printed last. `--cpu-smoke` (automatic without CUDA) runs every step at tiny sizes on the
CPU: tests/test_gpu_check.py runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import numpy as np  # noqa: E402

RECORDS = "gpu_check.jsonl"

# The speed variants of step 5, cheapest and most telling first (what a budget cut leaves out is last).
SPEED_VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("all off", {}),
    ("attention flash", {"attention": "flash"}),
    # Step caching (pipeline/method/step_cache.py) changes the frames: its pixel difference is no fault.
    ("step cache 3/3, depth 2", {"cache_interval": "3", "inversion_cache_interval": "3", "cache_depth": "2"}),
    ("step cache 3/3, depth 1", {"cache_interval": "3", "inversion_cache_interval": "3", "cache_depth": "1"}),
    ("channels-last", {"channels_last": "on"}),
    ("attention efficient", {"attention": "efficient"}),
    ("attention cudnn", {"attention": "cudnn"}),
    ("compile", {"compile": "on"}),
    ("compile + CUDA graphs", {"cuda_graphs": "on"}),
    ("channels-last + compile", {"channels_last": "on", "compile": "on"}),
    ("step cache 3/3, depth 3", {"cache_interval": "3", "inversion_cache_interval": "3", "cache_depth": "3"}),
    ("step cache 3/3, depth 2 + flash", {"cache_interval": "3", "inversion_cache_interval": "3", "cache_depth": "2",
                                         "attention": "flash"}),
]
# On the CPU smoke run: no compile (minutes of C++ builds on a 2-core machine; tests/test_speed.py
# proves compiled frames equal), and the CPU's own attention backends.
SMOKE_VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("all off", {}),
    ("attention math", {"attention": "math"}),
    ("channels-last", {"channels_last": "on"}),
    ("step cache 3/3, depth 2", {"cache_interval": "3", "inversion_cache_interval": "3", "cache_depth": "2"}),
]
# Every variant `--variants` may name (exact names, comma list), e.g. the CPU measurement of
# BENCHMARKS.md ("Speed options"): --variants "attention math,attention flash,channels-last,compile".
ALL_VARIANTS = dict(SPEED_VARIANTS + SMOKE_VARIANTS)
OFF = {
    "channels_last": "off", "attention": "auto", "compile": "off", "cuda_graphs": "off",
    "cache_interval": "off", "inversion_cache_interval": "off",
}  # fmt: skip


class Check:
    """Writes records as JSON lines, keeps the time budget."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = out / RECORDS
        self.path.write_text("")
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.records: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        record = {"elapsed_s": round(time.monotonic() - self.started, 1), **record}
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
        print(json.dumps(record, default=str), flush=True)
        return record

    def step(self, name: str, need_s: float, fn: Callable[[], dict[str, Any] | None]) -> None:
        """Run one step (which may write records of its own) unless less than `need_s` is left."""
        if self.left() < need_s:
            self.write(
                {"step": name, "ok": None, "skipped": f"time budget: {self.left():.0f} s left, needs ~{need_s:.0f}"}
            )
            return
        t0 = time.monotonic()
        try:
            record = fn()
        except Exception as e:  # a failed step is a record; the check goes on
            record = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
        if record is not None:
            self.write({"step": name, **record, "seconds": round(time.monotonic() - t0, 1)})


def env_record(device: str) -> dict[str, Any]:
    import torch

    versions = {}
    for name in ("diffusers", "transformers", "ray", "av", "pynvml", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as e:  # missing packages are a finding, not a failure
            versions[name] = f"missing ({type(e).__name__})"
    record = {
        "ok": True,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "versions": versions,
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record.update(
            gpu=props.name,
            gpu_memory_bytes=props.total_memory,
            compute_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return record


def cuda_path(device: str, dtype: str, frames: int, steps: int) -> dict[str, Any]:
    """The editor end to end on `device` in `dtype` with the tiny model, checking where things live."""
    import torch

    from fixtures.clips import moving_shapes
    from pipeline.method.editor import EditConfig, Pix2Video, sdedit_noise
    from pipeline.models.loading import load_diffusion_models, resolve_model

    models = load_diffusion_models(resolve_model("tiny"), dtype=dtype, device=device)
    editor = Pix2Video(models)
    clip = moving_shapes(num_frames=frames, width=64, height=64, seed=1)
    depth = [f.mean(-1).astype(np.float32) for f in clip]
    config = EditConfig(steps=steps, schedule="wavefront", max_batch=4)
    video = editor.prepare(clip, depth, video_id="gpu-check")
    zT = editor.invert(video, "shapes on a gradient", config)
    seen: dict[str, set[str]] = {"store": set(), "latents": set()}

    def trace(step: Any) -> None:
        # The store holds this step's features while the engine runs: they must be on the device.
        for table in (editor.store.anchor, editor.store.prev):
            seen["store"].update(f"{t.device.type}/{t.dtype}" for t in table.values())
        seen["latents"].add(f"{step.z.device.type}/{step.z.dtype}")

    latents = editor.edit(video, zT, ["a red painting", "a blue painting"], config, trace=trace)
    sd = editor.sdedit(video, ["a red painting"], config, strength=0.5)
    pixels = np.stack(list(editor.decode(latents[0])) + list(editor.decode(sd[0])))
    want = {"device": torch.device(device).type, "dtype": str(models.dtype)}
    problems = []
    if seen["store"] != {f"{want['device']}/{want['dtype']}"}:
        problems.append(f"feature store tensors: {sorted(seen['store'])}")
    if {video.latents.device.type, video.depth.device.type, zT.device.type} != {want["device"]}:
        problems.append("video latents, depth or inversion not on the device")
    if video.depth.dtype != models.dtype:
        problems.append(f"depth in {video.depth.dtype}")
    if sdedit_noise(video, 0).device.type != "cpu":  # drawn on the CPU: the same noise on every device
        problems.append("SDEdit noise not drawn on the CPU")
    if pixels.dtype != np.uint8 or pixels.shape != (2 * frames, 64, 64, 3):
        problems.append(f"frames {pixels.dtype} {pixels.shape}")
    finite = all(bool(torch.isfinite(z).all()) for z in [*latents, *sd])
    if not finite:
        problems.append("non-finite latents")
    engine = editor.last_engine
    return {
        "ok": not problems,
        "problems": problems,
        "dtype": dtype,
        "store_tensors": sorted(seen["store"]),
        "latents": sorted(seen["latents"]),
        "store_bytes": engine.store_bytes,
        "unet_calls": engine.unet_calls,
        "frames_mean": round(float(pixels.mean()), 2),
    }


def ray_run(device: str, work: Path, frames: int, steps: int) -> dict[str, Any]:
    """`pix2video run --device DEVICE --model tiny` on one generated clip, through Ray: a local instance
    started for it, or the one this process is already connected to (the smoke test's)."""
    import pyarrow.parquet as pq

    from fixtures.clips import write_sample_video
    from jobs.cli import run_verb

    clips = work / "clips"
    write_sample_video(clips / "clip.mp4", num_frames=frames, width=64, height=64, seed=2)
    out = work / "run"
    argv = ["--manifest", str(clips), "--output", str(out), "--prompt", "a watercolor painting"]
    argv += ["--model", "tiny", "--size", "64x64", "--steps", str(steps), "--device", device, "--no-progress"]
    if device.startswith("cuda"):
        argv += ["--num-gpus", "1", "--num-cpus", str(min(8, os.cpu_count() or 2))]
    status, text = _captured(lambda: run_verb("run", argv))
    rows = pq.read_table(out / "results.parquet").to_pylist() if (out / "results.parquet").exists() else []
    ok_rows = [r for r in rows if r.get("status") == "ok"]
    return {
        "ok": status == 0 and len(ok_rows) == 1 and len(rows) == 1,
        "exit": status,
        "command": "pix2video run " + " ".join(argv),
        "rows": [{k: r.get(k) for k in ("status", "error", "num_frames", "seconds_edit", "output")} for r in rows],
        "output_tail": text[-1500:],
    }


def _captured(fn: Callable[[], int]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        status = fn()
    return status, buffer.getvalue()


BENCH_KEYS = (
    "schedule", "prompts", "frames", "steps", "size", "dtype", "device", "seconds_per_frame",
    "cpu_seconds_per_frame", "encode_s", "inversion_s", "edit_s", "decode_s", "warmup_s", "warmup_cpu_s",
    "unet_calls", "unet_image_forwards_per_frame",
    "feature_store_bytes", "peak_memory_bytes", "peak_memory_kind", "gpu_busy_share_edit", "gpu_busy_share",
    "gpu_busy_samples", "gpu_busy_source", "speed_channels_last", "speed_attention", "speed_compile",
    "speed_cuda_graphs", "torch_threads", "unet_gflops_per_frame", "unet_gflops_per_frame_all_full",
    "cache_interval", "inversion_cache_interval", "cache_depth",
)  # fmt: skip


def bench_grid(check: Check, argv: list[str], schedules: list[str], prompts: int, fresh: bool) -> dict[str, Any] | None:
    """`pix2video bench ARGV --schedule S,.. --prompts P`: one record per schedule. `fresh`: as one
    command, which runs each schedule in a fresh process (peak memory its own); else one command per
    schedule, in this process (the CPU smoke run: no torch import per schedule)."""
    from jobs.cli import run_verb

    argv = [*argv, "--prompts", str(prompts)]
    runs = [",".join(schedules)] if fresh else schedules
    status, text = 0, ""
    for schedule in runs:
        code, out = _captured(lambda s=schedule: run_verb("bench", [*argv, "--schedule", s]))
        status, text = status or code, text + out
    results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    per_schedule = {r["schedule"]: r for r in results if "schedules" not in r and "schedule" in r}
    first = None
    for r in per_schedule.values():
        record = {"step": "bench", "ok": True, **{k: r.get(k) for k in BENCH_KEYS}}
        first = first or r
        record["speedup_vs_first"] = round(first["seconds_per_frame"] / r["seconds_per_frame"], 3)
        record["first_schedule"] = first["schedule"]
        check.write(record)
    if status != 0 or not per_schedule:
        command = f"pix2video bench {' '.join(argv)} --schedule {','.join(schedules)}"
        return {"ok": False, "exit": status, "command": command, "output_tail": text[-3000:]}
    return None  # the per-schedule records are the step's output


def bench_in_fresh_process(argv: list[str], limit_s: float | None) -> dict[str, Any]:
    """`python -m jobs.bench ARGV` in a process of its own (its peak memory, its own compiled graphs),
    killed with everything it started once `limit_s` has passed: a compile that outgrows the time
    budget costs the budget, not the whole check."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen(
        [sys.executable, "-m", "jobs.bench", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: inductor's compile workers go with it
    )
    try:
        out, err = child.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise TimeoutError(f"stopped after {limit_s:.0f} s, the time budget left") from None
    if child.returncode != 0:
        raise RuntimeError(f"pix2video bench exited {child.returncode}: {err.strip()[-1500:]}")
    return json.loads(out.strip().splitlines()[-1])


def speed_sweep(
    check: Check,
    base_argv: list[str],
    variants: list[tuple[str, dict[str, str]]],
    work: Path,
    rounds: int = 1,
    fresh: bool = False,
) -> None:
    """Each speed variant measured against all off (the first variant): in this process (models rebuilt
    per variant), or with `fresh` each in a process of its own, stopped when the time budget runs out.
    With `rounds` > 1 the whole list runs again, round after round, each variant's speed taken against
    the all-off run of its own round: on a shared machine the spread between rounds is the noise. Pixel
    differences are always against the first round's all-off frames."""
    import torch

    from jobs.bench import measure
    from jobs.cli import build_parser

    base_frames: np.ndarray | None = None
    for i, (round_, name, switches) in enumerate((r, n, s) for r in range(rounds) for n, s in variants):
        if name == variants[0][0]:
            baseline: dict[str, Any] | None = None  # all off opens each round
        need = 60.0 if "compile" in switches or "cuda_graphs" in switches else 25.0
        if check.left() < need:
            check.write(
                {"step": "speed", "variant": name, "ok": None, "skipped": f"time budget: {check.left():.0f} s left"}
            )
            continue
        frames_file = work / f"speed-{i}.npy"
        argv = [*base_argv, "--save-frames", str(frames_file)]
        for key, value in {**OFF, **switches}.items():
            argv += [f"--{key.replace('_', '-')}", value]
        t0 = time.monotonic()
        try:
            args = build_parser("bench").parse_args(argv)  # flags checked here either way
            if fresh:
                r = bench_in_fresh_process(argv, None if check.left() == float("inf") else max(check.left() - 5, 1))
            else:
                r = measure(args)
            frames = np.load(frames_file)
            record = {"step": "speed", "variant": name, "ok": True, **{k: r.get(k) for k in BENCH_KEYS}}
            if baseline is None:
                baseline = r
            if base_frames is None:
                base_frames = frames
            record["speedup_vs_all_off"] = round(baseline["seconds_per_frame"] / r["seconds_per_frame"], 3)
            # On a shared CPU the ratio of CPU seconds is the steadier one (no waiting for a core).
            record["cpu_speedup_vs_all_off"] = round(baseline["cpu_seconds_per_frame"] / r["cpu_seconds_per_frame"], 3)
            if baseline.get("unet_gflops_per_frame") and r.get("unet_gflops_per_frame"):
                record["flops_reduction_vs_all_off"] = round(
                    baseline["unet_gflops_per_frame"] / r["unet_gflops_per_frame"], 3
                )
            diff = np.abs(frames.astype(np.int16) - base_frames.astype(np.int16))
            record["max_pixel_diff_vs_all_off"] = int(diff.max())
            record["mean_pixel_diff_vs_all_off"] = round(float(diff.mean()), 4)
        except Exception as e:
            record = {"step": "speed", "variant": name, "ok": False, "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=6)}  # fmt: skip
        record["seconds"] = round(time.monotonic() - t0, 1)
        if rounds > 1:
            record["round"] = round_
        record["command"] = "pix2video bench " + " ".join(argv)
        check.write(record)
        # Free this variant's models (and compiled graphs) before the next one is built.
        torch._dynamo.reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def summary_table(records: list[dict[str, Any]]) -> str:
    """The short table printed last."""

    def gib(x: Any) -> str:
        return "-" if x is None else f"{x / 2**30:.2f}"

    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    lines = []
    for r in records:
        if r["step"] in ("env",):
            lines.append(f"env: {r.get('gpu', r.get('device'))}, torch {r.get('torch')}, CUDA {r.get('cuda', '-')}")
        elif r["step"] in ("cuda_path", "ray_run"):
            what = r.get("dtype") or "tiny, Ray"
            problem = r.get("skipped") or r.get("error") or r.get("problems") or r.get("rows")
            lines.append(f"{r['step']:<9} {what:<12} " + ("ok" if r.get("ok") else f"NOT OK: {problem}"[:160]))
    head = (
        f"{'step':<6} {'workload':<28} {'s/frame':>8} {'x':>6} {'cpu x':>6} {'peak GiB':>8} {'store GB':>8} "
        f"{'busy':>5} {'warm s':>7} {'Δpx':>4} {'GF/frame':>9}"
    )
    lines += ["", head]
    for r in records:
        if r["step"] not in ("bench", "speed"):
            continue
        if r["step"] == "bench":
            label = f"{r.get('schedule')} x{r.get('prompts')} prompts"
            ratio = r.get("speedup_vs_first")
        else:
            label = r.get("variant", "") + (f" (round {r['round'] + 1})" if "round" in r else "")
            ratio = r.get("speedup_vs_all_off")
        if not r.get("ok"):
            lines.append(f"{r['step']:<6} {label:<28} {r.get('skipped') or r.get('error', 'failed')}"[:160])
            continue
        store = r.get("feature_store_bytes")
        cpu_ratio = r.get("cpu_speedup_vs_all_off")  # the speed step's only
        lines.append(
            f"{r['step']:<6} {label:<28} {r['seconds_per_frame']:>8.3f} {ratio or 0:>6.2f} "
            f"{'-' if cpu_ratio is None else f'{cpu_ratio:.2f}':>6} "
            f"{gib(r.get('peak_memory_bytes')):>8} {'-' if store is None else f'{store / 1e9:.2f}':>8} "
            f"{pct(r.get('gpu_busy_share_edit')):>5} {r.get('warmup_s', 0):>7.1f} "
            f"{r.get('max_pixel_diff_vs_all_off', '-'):>4} {r.get('unet_gflops_per_frame') or '-':>9}"
        )
    return "\n".join(lines)


def _workload(smoke: bool, *, frames: int, steps: int) -> list[str]:
    """`pix2video bench` flags of a step's workload: real-size SD2 at 512² in bfloat16 with `frames` and
    `steps` on a GPU; the tiny model at 64², 3 frames and 3 steps in the CPU smoke run."""
    if smoke:
        return ["--model", "tiny", "--size", "64x64", "--dtype", "float32", "--frames", "3", "--steps", "3"]
    return ["--model", "random-sd2", "--size", "512x512", "--dtype", "bfloat16", "--frames", str(frames),
            "--steps", str(steps)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (default when no CUDA)")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget (default 450 on a GPU, none smoke)")
    parser.add_argument("--only", default="", help="comma list of steps to run (env is always run)")
    parser.add_argument(
        "--variants",
        default="",
        help=f"speed step: these variants (exact names, comma list) besides all off; any of: {', '.join(ALL_VARIANTS)}",
    )
    parser.add_argument(
        "--speed-rounds", type=int, default=1, help="speed step: run the variants this many times, round after round"
    )
    parser.add_argument(
        "--speed-fresh",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="speed step: each variant in a fresh process, stopped at the time budget (default: on a GPU)",
    )
    parser.add_argument(
        "--speed-workload",
        default="",
        metavar="BENCH_FLAGS",
        help="speed step: `pix2video bench` flags that replace its workload's, e.g. '--model random-sd2 "
        "--size 256x256 --frames 3 --steps 4' (to measure on a CPU at a size other than the smoke run's)",
    )
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("give --out DIR (or set $OUT)")
    picks = [p.strip() for p in args.variants.split(",") if p.strip()]
    unknown = [p for p in picks if p not in ALL_VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(ALL_VARIANTS)}")

    import torch

    smoke = args.cpu_smoke or not torch.cuda.is_available()
    device = "cpu" if smoke else "cuda"
    check = Check(Path(args.out), args.budget_s or (float("inf") if smoke else 450.0))
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    def wanted(step: str) -> bool:
        return not only or step in only

    check.step("env", 0, lambda: {**env_record(device), "mode": "cpu-smoke" if smoke else "gpu"})
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    if wanted("cuda_path"):
        frames, steps = (3, 3) if smoke else (6, 10)
        for dtype in ("float32", "bfloat16") if smoke else ("float32", "bfloat16", "float16"):
            check.step("cuda_path", 10, lambda d=dtype: cuda_path(device, d, frames, steps))
    if wanted("ray_run"):
        frames, steps = (2, 2) if smoke else (8, 10)
        check.step("ray_run", 30, lambda: ray_run(device, work, frames, steps))
    if wanted("bench"):
        grid = [*_workload(smoke, frames=16, steps=50), "--device", device]
        schedules = ["sequential", "wavefront"]
        for prompts in (1, 4):
            check.step(
                "bench", 20 if smoke else 120, lambda p=prompts: bench_grid(check, grid, schedules, p, not smoke)
            )
    if wanted("speed"):
        base = [*_workload(smoke, frames=8, steps=20), "--device", device, "--schedule", "wavefront", "--prompts", "1"]
        base += shlex.split(args.speed_workload)  # later flags win
        variants = SMOKE_VARIANTS if smoke else SPEED_VARIANTS
        if picks:  # all off comes first: it is what the others are compared with
            variants = [("all off", {})] + [(p, ALL_VARIANTS[p]) for p in picks if p != "all off"]
        fresh = not smoke if args.speed_fresh is None else args.speed_fresh
        speed_sweep(check, base, variants, work, max(1, args.speed_rounds), fresh)
    shutil.rmtree(work, ignore_errors=True)  # clips, frames and the run's output: the records hold the figures
    table = summary_table(check.records)
    (check.out / "gpu_check_summary.txt").write_text(table + "\n")
    print("\n" + table)
    failed = [r for r in check.records if r.get("ok") is False]
    print(
        f"\n{len(check.records)} records in {check.path}; {len(failed)} failed; "
        f"{time.monotonic() - check.started:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
