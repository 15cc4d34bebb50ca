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


def _peak_memory(device) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One schedule in this process: generate a video, then time prepare, invert, edit, decode."""
    import torch

    from fixtures.clips import moving_shapes
    from fixtures.tiny import build_random_real_size_models
    from pipeline.method.editor import EditConfig, Pix2Video
    from pipeline.method.engine import AUTO_SCHEDULE
    from pipeline.models.loading import load_diffusion_models, resolve_model
    from pipeline.models.sizes import ModelSizes, read_model_sizes

    # The random real-size models are SD2's shapes; a folder says its own (VAE factor, size multiple).
    sizes = ModelSizes() if args.model == RANDOM_SD2 else read_model_sizes(resolve_model(args.model))
    width, height = sizes.parse_size(args.size)
    if args.model == RANDOM_SD2:
        models = build_random_real_size_models(args.dtype, args.device)
    else:
        models = load_diffusion_models(resolve_model(args.model), dtype=args.dtype, device=args.device)
    device = models.device
    editor = Pix2Video(models)
    frames = moving_shapes(num_frames=args.frames, width=width, height=height, seed=0)
    depth = [f.mean(-1).astype(np.float32) for f in frames]
    config = EditConfig(
        steps=args.steps, schedule=args.schedule, max_batch=args.max_batch, injection=args.injection
    )
    prompts = [f"a painting of shapes, style {i}" for i in range(args.prompts)]

    rows = [0]
    hook = models.unet.register_forward_pre_hook(lambda _m, inputs: rows.__setitem__(0, rows[0] + inputs[0].shape[0]))
    # Warm-up: first calls pay for kernel selection and allocation, not for the method.
    with torch.no_grad():
        warm = EditConfig(steps=2, schedule=args.schedule, max_batch=args.max_batch)
        video = editor.prepare(frames[:2], depth[:2])
        editor.edit(video, editor.invert(video, "warm-up", warm), prompts[:1], warm)
    rows[0] = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    times = {}
    _sync(device)
    t0 = time.perf_counter()
    video = editor.prepare(frames, depth)
    _sync(device)
    times["encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    zT = editor.invert(video, "shapes on a gradient", config)
    _sync(device)
    times["inversion_s"] = time.perf_counter() - t0
    inversion_rows = rows[0]
    t0 = time.perf_counter()
    latents = editor.edit(video, zT, prompts, config)
    _sync(device)
    times["edit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for z in latents:
        for _ in editor.decode(z, config.decode_batch):
            pass
    _sync(device)
    times["decode_s"] = time.perf_counter() - t0
    hook.remove()

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
        **{k: round(v, 4) for k, v in times.items()},
        "unet_image_forwards_per_frame": rows[0] / out_frames,
        "unet_inversion_forwards_per_frame": inversion_rows / args.frames,
        "unet_calls": engine.unet_calls,
        "feature_store_bytes": engine.store_bytes,
        "peak_memory_bytes": _peak_memory(device),
        "torch_threads": torch.get_num_threads(),
    }


def run(args: argparse.Namespace) -> int:
    schedules = [s.strip() for s in args.schedule.split(",") if s.strip()]
    if not schedules or any(s not in ("auto", "sequential", "wavefront") for s in schedules):
        raise InputError(f"--schedule {args.schedule!r}: give auto, sequential, wavefront or a comma list of them")
    for name in ("frames", "steps", "prompts", "max_batch"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
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


def _child_argv(args: argparse.Namespace, schedule: str) -> list[str]:
    argv = [sys.executable, "-m", "jobs.bench", "--schedule", schedule]
    for name in ("model", "size", "frames", "steps", "prompts", "dtype", "max_batch", "injection", "device"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


if __name__ == "__main__":
    from jobs._common import main_for

    main_for("bench")
