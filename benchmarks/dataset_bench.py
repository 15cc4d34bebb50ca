"""Benchmark of the dataset pipeline on Ray against the same work in one process; prints figures.

    python benchmarks/dataset_bench.py                 # 8 videos, tiny model (a few minutes on 2 cores)
    python benchmarks/dataset_bench.py --videos 8 --frames 16 --size 128 --steps 20 --k 4

Three figures (BENCHMARKS.md records them with the machine they came from):

1. Ray overhead: wall time of `pix2video run` over N generated videos against the same editing done
   in one process without Ray (decode, resize, depth, caption, invert, edit, encode, in a loop). Both
   are fresh processes timed from outside, so imports and model loading count on both sides; the run's
   own figure without starting Ray is reported too.
2. Editor idle share once warm: the share of the editor actors' time, after their first video, spent
   waiting for work (precompute not ready) rather than editing. From the run's summary line.
3. K prompts of one video in one run against K runs of one prompt each (separate outputs, so nothing is
   shared): total inversion seconds and wall time. One run inverts once; K runs invert K times.

Only public entry points are used: the `pix2video` command (`python -m jobs.cli`) and `pipeline`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(threads: int | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.setdefault("PIX2VIDEO_CACHE", str(Path(tempfile.gettempdir()) / "pix2video-bench-cache"))
    env.setdefault("HF_HUB_OFFLINE", "1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def make_dataset(folder: Path, videos: int, frames: int, size: int, prompts: list[str]) -> Path:
    from fixtures.clips import write_sample_video

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(videos):
        write_sample_video(folder / f"clip-{i}.mp4", num_frames=frames, width=size, height=size, seed=i)
        lines.append(json.dumps({"video": f"clip-{i}.mp4", "prompt": prompts}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def baseline(manifest: str, output: str, size: int, steps: int, threads: int) -> None:
    """The same editing as `pix2video run`, in this process, one video after the other, no Ray."""
    import torch

    torch.set_num_threads(threads)
    from pipeline.io.frames import resize_frames
    from pipeline.io.video import read_frames, write_video
    from pipeline.method.editor import EditConfig, Pix2Video
    from pipeline.models.caption import Captioner
    from pipeline.models.depth import DepthEstimator
    from pipeline.models.loading import load_diffusion_models, resolve_model

    models = load_diffusion_models(resolve_model("tiny"), device="cpu")
    editor = Pix2Video(models)
    depth_model = DepthEstimator.from_model("tiny", device="cpu")
    captioner = Captioner.from_model("tiny", device="cpu")
    config = EditConfig(steps=steps)
    folder = Path(manifest).parent
    os.makedirs(output, exist_ok=True)
    for n, line in enumerate(Path(manifest).read_text().splitlines()):
        row = json.loads(line)
        frames = resize_frames(read_frames(str(folder / row["video"])).frames, size, size)
        depth = depth_model(frames)
        source = captioner(frames[:1])[0]
        video = editor.prepare(frames, list(depth))
        zT = editor.invert(video, source, config)
        for k, (latents) in enumerate(editor.edit(video, zT, row["prompt"], config)):
            write_video(os.path.join(output, f"{n}-{k}.mp4"), editor.decode(latents), 8.0, width=size, height=size)


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def _run_cmd(manifest: Path, out: Path, a: argparse.Namespace, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.cli",
        "run",
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--model",
        "tiny",
        "--size",
        f"{a.size}x{a.size}",
        "--steps",
        str(a.steps),
        "--address",
        "local",
        "--no-progress",
        *extra,
    ]


def _summary(stdout: str) -> dict[str, float]:
    m = re.search(r"in ([\d.]+) s, ([\d.]+) frames/s(?:, editors idle ([\d.]+)% once warm)?", stdout)
    if not m:
        return {}
    return {
        "run_seconds": float(m.group(1)),
        "frames_per_second": float(m.group(2)),
        "editor_idle_percent": float(m.group(3)) if m.group(3) else float("nan"),
    }


def _stage_totals(out: Path) -> dict[str, float]:
    import pyarrow.parquet as pq

    t = pq.read_table(out / "results.parquet")
    return {c: round(sum(t.column(c).to_pylist()), 3) for c in t.column_names if c.startswith("seconds_")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--k", type=int, default=4, help="prompts for figure 3")
    p.add_argument("--baseline", nargs=2, metavar=("MANIFEST", "OUTPUT"), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the one-process baseline")
    a = p.parse_args()
    if a.baseline:
        baseline(a.baseline[0], a.baseline[1], a.size, a.steps, a.threads)
        return

    work = Path(tempfile.mkdtemp(prefix="pix2video-bench-"))
    env = _env()
    subprocess.run(
        [sys.executable, "-c", "from pipeline.models.loading import resolve_model; resolve_model('tiny')"],
        cwd=ROOT,
        env=env,
        check=True,
    )  # build the tiny models outside every timing
    manifest = make_dataset(work / "data", a.videos, a.frames, a.size, ["a watercolor painting"])
    figures: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
        "work": f"{a.videos} videos x {a.frames} frames at {a.size}x{a.size}, 1 prompt, tiny model, {a.steps} steps",
    }

    # 1 and 2: overhead and idle share.
    # One torch thread: the editor actor gets one (its one CPU), and on small machines torch's
    # spinning threads make more of them slower, not faster (tests/conftest.py measured 5x on 2 cores).
    wall, _ = _timed(
        [
            sys.executable,
            __file__,
            "--baseline",
            str(manifest),
            str(work / "base"),
            "--size",
            str(a.size),
            "--steps",
            str(a.steps),
            "--threads",
            str(a.threads),
        ],
        env,
    )
    figures["one_process_seconds"] = round(wall, 2)
    wall, stdout = _timed(_run_cmd(manifest, work / "ray", a, "--num-cpus", str(os.cpu_count() or 2)), env)
    figures["ray_run_seconds"] = round(wall, 2)
    figures.update(_summary(stdout))
    figures["ray_stage_seconds"] = _stage_totals(work / "ray")
    best = figures["one_process_seconds"]
    figures["ray_overhead_percent"] = round(100 * (wall / best - 1), 1)
    figures["ray_overhead_percent_without_ray_start"] = round(100 * (figures["run_seconds"] / best - 1), 1)

    # 3: K prompts of one video.
    prompts = [f"a painting, style {i}" for i in range(a.k)]
    one = make_dataset(work / "one", 1, a.frames, a.size, prompts)
    wall_k, stdout = _timed(_run_cmd(one, work / "k-prompts", a), env)
    k_run = _summary(stdout)
    k_stage = _stage_totals(work / "k-prompts")
    sep_wall = sep_run = sep_invert = sep_edit = 0.0
    for i, prompt in enumerate(prompts):
        single = make_dataset(work / f"single-{i}", 1, a.frames, a.size, [prompt])
        w, stdout = _timed(_run_cmd(single, work / f"single-out-{i}", a), env)
        sep_wall += w
        sep_run += _summary(stdout).get("run_seconds", 0.0)
        st = _stage_totals(work / f"single-out-{i}")
        sep_invert += st["seconds_invert"]
        sep_edit += st["seconds_edit"]
    figures["k_prompts"] = {
        "k": a.k,
        "one_run": {
            "wall": round(wall_k, 2),
            "run_seconds": k_run.get("run_seconds"),
            "invert_seconds": k_stage["seconds_invert"],
            "edit_seconds": k_stage["seconds_edit"],
        },
        "k_runs": {
            "wall": round(sep_wall, 2),
            "run_seconds": round(sep_run, 2),
            "invert_seconds": round(sep_invert, 3),
            "edit_seconds": round(sep_edit, 3),
        },
    }
    print(json.dumps(figures, indent=2))
    print(f"(work folder: {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
