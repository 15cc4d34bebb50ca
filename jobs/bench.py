"""Measure the editor's speed and memory; the last line printed is one JSON object.

    pix2video bench --model tiny --size 64x64 --frames 16 --steps 50
    pix2video bench --model random-sd2 --size 512x512 --dtype bfloat16 --device cuda
    pix2video bench --schedule sequential,wavefront --prompts 4

`--model random-sd2` is the real-size SD2-depth UNet and VAE with random weights (nothing is
downloaded): it costs what the real model costs, so its times and memory are the real ones, while its
pictures are noise. With several schedules each runs in a fresh process (so peak memory is its own),
one after the other, and the summary gives each one's speed relative to the first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from pipeline.errors import InputError

RANDOM_SD2 = "random-sd2"
# EditConfig's step caching
CACHE_FIELDS = ("cache_interval", "inversion_cache_interval", "cache_depth", "cache_warmup")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="tiny",
        help=f"'tiny' (default), '{RANDOM_SD2}' (real-size SD2-depth UNet + VAE, random weights), or a model id/folder",
    )
    parser.add_argument(
        "--size", default="64x64", metavar="WxH", help="frame size, multiples of the model's (SD2: 64; default 64x64)"
    )
    parser.add_argument("--frames", type=int, default=8, help="frames in the generated video (default 8)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--prompts", type=int, default=1, help="target prompts edited from one inversion (default 1)")
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="model dtype (default float32)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if visible)")
    parser.add_argument(
        "--schedule",
        default="auto",
        help="one schedule, or several separated by commas to compare: auto, sequential, wavefront",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="wavefront: items per UNet call (default 8)")
    parser.add_argument(
        "--injection", default="anchor+prev", help="anchor+prev (default) | anchor | prev | random | none"
    )
    parser.add_argument(
        "--save-frames", metavar="FILE.npy", help="also save the first prompt's edited frames (uint8), to compare runs"
    )
    parser.add_argument(
        "--count-flops",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count the UNet's FLOPs per output frame (FlopCounterMode on one UNet row of each kind the run "
        "used, at its size; default on)",
    )
    parser.add_argument(
        "--variants",
        default="",
        metavar="'FLAGS; FLAGS; ...'",
        help="compare: each ';'-separated set of bench flags added to the others, each in a fresh process, one "
        "after the other; the summary gives seconds, CPU seconds and UNet FLOPs per frame against the first "
        "(e.g. '--cache-interval off; --cache-interval 3 --inversion-cache-interval 3')",
    )
    from jobs._common import add_speed_arguments
    from jobs._flags import add_options
    from pipeline.method.config import EditConfig

    add_speed_arguments(parser)
    group = parser.add_argument_group("step caching (changes the frames; README, 'Speed')")
    add_options(group, EditConfig, only=CACHE_FIELDS)


class GpuBusySampler:
    """The share of time the GPU was busy, sampled in a thread: NVML's utilization.gpu (the share of
    the driver's last sample period, 1/6 s to 1 s, in which at least one kernel ran) through pynvml
    (nvidia-ml-py) when importable, else `nvidia-smi --query-gpu=utilization.gpu`. Polled every
    `interval` seconds; `share(since, until)` averages the samples of a time window."""

    def __init__(self, device: Any, interval: float = 0.1) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []  # (perf_counter, busy share 0..1)
        self.source: str | None = None
        self._read = self._reader(device)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if self._read else None

    def _reader(self, device: Any):
        if device.type != "cuda":
            return None
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            import pynvml

            pynvml.nvmlInit()
            try:  # the same GPU as torch's, whatever CUDA_VISIBLE_DEVICES says
                uuid = str(torch.cuda.get_device_properties(index).uuid)
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            except Exception:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.source = "pynvml utilization.gpu"
            return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        except Exception:
            import shutil

            if shutil.which("nvidia-smi") is None:
                return None
            self.source = "nvidia-smi utilization.gpu"
            query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"-i={index}"]

            def read() -> float:
                return float(subprocess.run(query, capture_output=True, text=True, check=True).stdout.split()[0]) / 100

            return read

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.samples.append((time.perf_counter(), self._read()))
            except Exception:  # a failed read is a missing sample, not a failed benchmark
                pass

    def __enter__(self) -> GpuBusySampler:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def share(self, since: float, until: float) -> float | None:
        window = [busy for t, busy in self.samples if since <= t <= until]
        return round(sum(window) / len(window), 4) if window else None


def unet_rows(config: Any, frames: int, prompts: int) -> set[int]:
    """Every UNet batch size (rows) an invert + edit of `frames` frames x `prompts` prompts can use:
    what a compiled UNet must be warmed up for."""
    settings = config.engine_settings()
    rows = {items * settings.branches for items in range(1, min(settings.max_batch, frames * prompts) + 1)}
    rows.add(min(config.inversion_batch, frames))
    if frames % config.inversion_batch:
        rows.add(frames % config.inversion_batch)
    return rows


def _peak_memory(device) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _cpu_seconds() -> float:
    """User + system CPU time of this process, its threads and its waited-for children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unet_work(
    args: argparse.Namespace, editor: Any, counter: Any, config: Any, width: int, height: int, vae_factor: int
) -> dict[str, Any]:
    """UNet GFLOPs per output frame of the timed run (inversion + edit, over frames x prompts), from the
    rows it ran of each kind and FlopCounterMode's count of one row of each kind at its size; also what
    the same rows cost with every step full, and the count per row."""
    from pipeline.method.flops import row_flops

    per_row = row_flops(editor.models.unet, height, width, config.cache_depth, vae_factor)
    out_frames = args.frames * args.prompts

    def per_frame(flops: int) -> float:
        return round(flops / out_frames / 1e9, 2)

    return {
        "unet_gflops_per_frame": per_frame(counter.flops(per_row)),
        "unet_gflops_per_frame_all_full": per_frame(counter.full_flops(per_row)),
        "unet_inversion_gflops_per_frame": per_frame(counter.flops(per_row, "inversion")),
        "unet_edit_gflops_per_frame": per_frame(counter.flops(per_row, "edit")),
        "unet_gflops_per_row": {
            f"{'cached' if cached else 'full'}, attends to {sources or 'itself'}": round(f / 1e9, 2)
            for (cached, sources), f in sorted(per_row.items())
        },
        "unet_rows_cached": sum(n for (_, cached, _), n in counter.counts.items() if cached),
        "flops_counter": "torch.utils.flop_counter.FlopCounterMode, math attention",
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One schedule in this process: generate a video, then time prepare, invert, edit, decode."""
    import torch

    from jobs._common import speed_options
    from pipeline.io.frames import resize_frames
    from pipeline.method.config import AUTO_SCHEDULE
    from pipeline.method.editor import EditConfig, Pix2Video
    from pipeline.method.flops import RowCounter
    from pipeline.models import registry
    from pipeline.models.loading import load_diffusion_models, resolve_model
    from pipeline.models.sizes import ModelSizes, read_model_sizes
    from pipeline.models.speed import apply_speed_options, warm_up
    from toyworld.benchmark import BENCH_SEED
    from toyworld.world import random_scene, render

    # The random real-size models are SD2's shapes; a folder says its own (VAE factor, size multiple).
    sizes = ModelSizes() if args.model == RANDOM_SD2 else read_model_sizes(resolve_model(args.model))
    width, height = sizes.parse_size(args.size)
    speed = speed_options(args)
    build = registry.builder(args.model)  # random-sd2: built in memory (pipeline/models/registry.py)
    if build is not None:
        models = build(args.dtype, args.device)
        apply_speed_options(models, speed)
    else:
        models = load_diffusion_models(resolve_model(args.model), dtype=args.dtype, device=args.device, speed=speed)
    device = models.device
    editor = Pix2Video(models)
    # A held-out toy-world clip at the working size: what the pictures show does not change the cost.
    frames = resize_frames(render(random_scene(BENCH_SEED, frames=args.frames)).frames, width, height)
    depth = [f.mean(-1).astype(np.float32) for f in frames]
    caching = {name: getattr(args, name) for name in CACHE_FIELDS if hasattr(args, name)}
    config = EditConfig(
        steps=args.steps, schedule=args.schedule, max_batch=args.max_batch, injection=args.injection, **caching
    )
    config.validate()
    prompts = [f"a painting of shapes, style {i}" for i in range(args.prompts)]

    rows = [0]
    hook = models.unet.register_forward_pre_hook(lambda _m, inputs: rows.__setitem__(0, rows[0] + inputs[0].shape[0]))
    counter = RowCounter(models.unet, editor.store)  # rows by kind (full/cached, frames attended to)
    # Warm-up: first calls pay for kernel selection and allocation (and, compiled, for compiling every
    # padded batch size the run will use), not for the method.
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    with torch.no_grad():
        warm = EditConfig(steps=2, schedule=args.schedule, max_batch=args.max_batch)
        video = editor.prepare(frames[:2], depth[:2])
        editor.edit(video, editor.invert(video, "warm-up", warm), prompts[:1], warm)
        warm_up(models, unet_rows(config, args.frames, args.prompts), height, width, sizes.vae_factor)
    _sync(device)
    warmup_s, warmup_cpu_s = time.perf_counter() - t0, _cpu_seconds() - cpu0
    rows[0] = 0
    counter.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    times, marks = {}, {}
    with GpuBusySampler(device) as busy:
        _sync(device)
        cpu0 = _cpu_seconds()
        t0 = marks["start"] = time.perf_counter()
        video = editor.prepare(frames, depth)
        _sync(device)
        times["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        counter.phase = "inversion"
        zT = editor.invert(video, "shapes on a gradient", config)
        _sync(device)
        times["inversion_s"] = time.perf_counter() - t0
        inversion_rows = rows[0]
        t0 = marks["edit"] = time.perf_counter()
        counter.phase = "edit"
        latents = editor.edit(video, zT, prompts, config)
        _sync(device)
        times["edit_s"] = time.perf_counter() - t0
        t0 = marks["edited"] = time.perf_counter()
        first_prompt = []
        for p, z in enumerate(latents):
            for pixels in editor.decode(z, config.decode_batch):
                if p == 0 and args.save_frames:
                    first_prompt.append(pixels)
        _sync(device)
        times["decode_s"] = time.perf_counter() - t0
        marks["end"] = time.perf_counter()
        cpu_s = _cpu_seconds() - cpu0
    hook.remove()
    counter.remove()
    work = unet_work(args, editor, counter, config, width, height, sizes.vae_factor) if args.count_flops else {}
    if args.save_frames:  # to compare runs (speed options) pixel by pixel
        np.save(args.save_frames, np.stack(first_prompt))

    out_frames = args.frames * args.prompts
    total = sum(times.values())
    engine = editor.last_engine
    return {
        "model": args.model,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "size": f"{width}x{height}",
        "frames": args.frames,
        "prompts": args.prompts,
        "steps": args.steps,
        "schedule": AUTO_SCHEDULE if config.schedule == "auto" else config.schedule,
        "max_batch": engine.settings.max_batch,
        "seconds_per_frame": total / out_frames,
        # CPU seconds of this process (and of its finished children: a compiler) per output frame: on
        # a CPU shared with other work, what the edit cost rather than how long it waited for a core.
        "cpu_seconds_per_frame": round(cpu_s / out_frames, 4),
        **{k: round(v, 4) for k, v in times.items()},
        "unet_image_forwards_per_frame": rows[0] / out_frames,
        "unet_inversion_forwards_per_frame": inversion_rows / args.frames,
        "unet_calls": engine.unet_calls,
        **work,
        "cache_interval": config.edit_cache().interval,
        "inversion_cache_interval": config.inversion_cache().interval,
        "cache_depth": config.cache_depth,
        "cache_warmup": config.edit_cache().warmup,
        "feature_store_bytes": engine.store_bytes,
        "peak_memory_bytes": _peak_memory(device),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process max RSS",
        # Busy share of the GPU while editing (steps 4-7) and over the whole timed run; None on a CPU.
        "gpu_busy_share_edit": busy.share(marks["edit"], marks["edited"]),
        "gpu_busy_share": busy.share(marks["start"], marks["end"]),
        "gpu_busy_samples": len(busy.samples),
        "gpu_busy_source": busy.source,
        "warmup_s": round(warmup_s, 3),
        "warmup_cpu_s": round(warmup_cpu_s, 3),
        **{f"speed_{k}": v for k, v in models.speed.as_dict().items()},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def run(args: argparse.Namespace) -> int:
    schedules = [s.strip() for s in args.schedule.split(",") if s.strip()]
    if not schedules or any(s not in ("auto", "sequential", "wavefront") for s in schedules):
        raise InputError(f"--schedule {args.schedule!r}: give auto, sequential, wavefront or a comma list of them")
    for name in ("frames", "steps", "prompts", "max_batch"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.variants.strip():
        return compare_variants(args)
    if len(schedules) == 1:
        args.schedule = schedules[0]
        print(json.dumps(measure(args)))
        return 0
    results = {}
    for schedule in schedules:
        # The same flags, one schedule, in a fresh process: its peak memory is then its own.
        done = subprocess.run(_child_argv(args, schedule), capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise InputError(f"benchmark of schedule {schedule!r} failed (exit {done.returncode})")
        results[schedule] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(results[schedule]))
    first = results[schedules[0]]
    summary = dict(first)
    summary["schedules"] = results
    summary["speedup_vs_" + schedules[0]] = {
        s: round(first["seconds_per_frame"] / r["seconds_per_frame"], 3) for s, r in results.items()
    }
    print(json.dumps(summary))
    return 0


def compare_variants(args: argparse.Namespace) -> int:
    """`--variants`: each set of flags on top of the others, in a fresh process each; one JSON line per
    variant, then a summary of their ratios to the first (time, CPU time, UNet FLOPs per frame)."""
    import shlex

    variants = [v.strip() for v in args.variants.split(";")]
    if any(not v for v in variants):
        raise InputError(f"--variants {args.variants!r}: an empty variant; separate sets of flags with ';'")
    from jobs.cli import build_parser

    for variant in variants:  # a bad flag is a usage error (exit 2) before anything runs
        build_parser("bench").parse_args(shlex.split(variant))
    results = []
    for variant in variants:
        argv = [*_child_argv(args, args.schedule), *shlex.split(variant)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise InputError(f"benchmark of variant {variant!r} failed (exit {done.returncode})")
        result = {"variant": variant, **json.loads(done.stdout.strip().splitlines()[-1])}
        results.append(result)
        print(json.dumps(result), flush=True)
    first = results[0]

    def ratio(key: str, r: dict[str, Any]) -> float | None:
        return round(first[key] / r[key], 3) if first.get(key) and r.get(key) else None

    table = [
        {
            "variant": r["variant"],
            "seconds_per_frame": round(r["seconds_per_frame"], 4),
            "cpu_seconds_per_frame": r["cpu_seconds_per_frame"],
            "unet_gflops_per_frame": r.get("unet_gflops_per_frame"),
            "speedup": ratio("seconds_per_frame", r),
            "cpu_speedup": ratio("cpu_seconds_per_frame", r),
            "flops_reduction": ratio("unet_gflops_per_frame", r),
        }
        for r in results
    ]
    setting = {k: first.get(k) for k in ("model", "device", "size", "frames", "prompts", "steps", "torch_threads")}
    print(json.dumps({**setting, "versus": variants[0], "variants": table}))
    return 0


def _child_argv(args: argparse.Namespace, schedule: str) -> list[str]:
    argv = [sys.executable, "-m", "jobs.bench", "--schedule", schedule]
    speed = ("channels_last", "attention", "compile", "cuda_graphs")
    names = ("model", "size", "frames", "steps", "prompts", "dtype", "max_batch", "injection", "device", *speed)
    for name in (*names, *CACHE_FIELDS):
        value = getattr(args, name, None)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if not args.count_flops:
        argv.append("--no-count-flops")
    return argv


if __name__ == "__main__":
    from jobs._common import main_for

    main_for("bench")
