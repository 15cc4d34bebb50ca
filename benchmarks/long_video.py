"""Long videos on the toy world's ground truth: does the edit fade or drift with length, and does the
anchor refresh (`--anchor-refresh K`) keep it?

    python benchmarks/long_video.py                                   # toy models, 16/64/256 frames, K = 0 and 16
    python benchmarks/long_video.py --seeds 8 --refresh 0,16,32 --output long.json
    python benchmarks/long_video.py --model tiny --lengths 8 --window 4 --steps 2 --size 64   # the machinery only

For each held-out seed one toy scene is rendered at the longest length, and the edit is chosen on
that clip as in the toy Table 1 (`toyworld.benchmark.edit_task`: its largest object gets a new
colour; source prompt = the caption, target = the caption with that colour replaced; true disparity
as depth, no depth model). A shorter length is the clip's first N frames with the same edit (the world
renders `random_scene(seed, frames=N)` as exactly those frames). Every length is edited once per
refresh setting (0 = the paper's single anchor), as one shot, and scored per window of `--window` frames with
`toyworld.measures.score_edit`: edit accuracy (share of frames whose object reads as the target colour
inside its TRUE mask) and warp error (grey levels², consecutive edited frames under the TRUE flow,
inside the object). The input's own warp error per window is the floor the edit is compared with.

Seeds are kept only when the edited object stays in view (at least 20 pixels in half the frames of
every window of the longest clip): a window without the object has no accuracy, and objects and the
camera drift out of the 128-pixel frame over hundreds of frames in this world.

Prints one Markdown table per measure (rows: length x refresh; columns: windows) and, with
`--output`, writes every per-clip, per-window figure as JSON. A run split over processes or machines
(`--seed S --seeds 1` each) is put together with `--tables-from a.json b.json`, which edits nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from pipeline.method.editor import Pix2Video
    from toyworld.benchmark import EditTask

LONG_SEED = 4_000_000  # held out: training uses 0.., heldout 1e6.., edits 2e6.., shot cuts 3e6..
MIN_PIXELS = 20  # as toyworld.measures.score_edit counts a frame as showing the object


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def in_view(task: EditTask, window: int) -> bool:
    """The edited object shows (>= MIN_PIXELS) in at least half the frames of every window."""
    seen = task.clip.masks[:, task.obj].sum(axis=(1, 2)) >= MIN_PIXELS
    return all(seen[w : w + window].mean() >= 0.5 for w in range(0, len(seen), window))


def window_scores(frames: np.ndarray, task: EditTask, window: int) -> list[dict[str, float]]:
    """toyworld.measures.score_edit on every window of `window` frames (its flow: the window's pairs)."""
    from toyworld.measures import score_edit

    c = task.clip
    out = []
    for w in range(0, len(frames), window):
        end = min(w + window, len(frames))
        score = score_edit(
            frames[w:end],
            c.masks[w:end],
            c.ids[w:end],
            c.flow[w : end - 1],
            task.obj,
            task.colour_after,
            c.frames[w:end],
        )
        out.append({"start": w, "accuracy": score.accuracy, "warp": score.warp})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy", help="diffusion model (default toy)")
    parser.add_argument("--lengths", type=_ints, default=[16, 64, 256], help="clip lengths (default 16,64,256)")
    parser.add_argument("--refresh", type=_ints, default=[0, 16], help="--anchor-refresh values (default 0,16)")
    parser.add_argument("--window", type=int, default=16, help="frames per scored window (default 16)")
    parser.add_argument("--seeds", type=int, default=4, help="held-out scenes kept (default 4)")
    parser.add_argument("--seed", type=int, default=LONG_SEED, help=f"first candidate seed (default {LONG_SEED})")
    parser.add_argument(
        "--tables-from", type=Path, nargs="+", help="print the tables of these --output files (no edit)"
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.tables_from:
        runs = [json.loads(path.read_text()) for path in args.tables_from]
        seeds = [seed for run in runs for seed in run["seeds"]]
        print(f"{len(seeds)} held-out scenes (seeds {', '.join(map(str, seeds))}) from {len(runs)} run(s)")
        print_tables([c for run in runs for c in run["clips"]], args.lengths, args.refresh, args.window)
        return 0

    from pipeline.method.editor import EditConfig
    from toyworld.measures import warp_error

    editor = load_editor(args)
    longest = max(args.lengths)

    started = time.perf_counter()
    tasks: dict[int, EditTask] = {}
    candidate = args.seed
    while len(tasks) < args.seeds:
        if candidate - args.seed > 50 * args.seeds:
            raise SystemExit(f"fewer than {args.seeds} scenes keep their object in view; lower --seeds")
        task = toy_task(candidate, longest, args.size)
        if in_view(task, args.window):
            tasks[candidate] = task
        candidate += 1
    seeds = list(tasks)

    records = []
    for seed, whole in tasks.items():
        for n in args.lengths:
            task = first_frames(whole, n)
            clip = task.clip
            video = editor.prepare(clip.frames, list(clip.disparity), video_id=f"long-{seed}")
            base = EditConfig(steps=args.steps)
            zT = editor.invert(video, task.source_prompt, base)
            inputs = [
                warp_error(
                    clip.frames[w : w + args.window],
                    clip.masks[w : w + args.window],
                    clip.ids[w : w + args.window],
                    clip.flow[w : w + args.window - 1],
                    task.obj,
                )
                for w in range(0, n, args.window)
            ]
            for k in args.refresh:
                config = EditConfig(steps=args.steps, anchor_refresh=k)
                t0 = time.perf_counter()
                (latents,) = editor.edit(video, zT, [task.target_prompt], config)
                frames = np.stack(list(editor.decode(latents, config.decode_batch)))
                windows = window_scores(frames, task, args.window)
                for w, floor in zip(windows, inputs, strict=True):
                    w["input_warp"] = floor
                records.append(
                    {
                        "seed": seed,
                        "frames": n,
                        "anchor_refresh": k,
                        "target": task.target_prompt,
                        "seconds": time.perf_counter() - t0,
                        "windows": windows,
                    }
                )
                print(f"seed {seed}, {n} frames, refresh {k}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                # after every edit, so that a long run stopped early keeps what it measured
                write_output(args, {"seeds": seeds, "clips": records})

    print(
        f"{len(seeds)} held-out scenes (seeds {', '.join(map(str, seeds))}), model {args.model}, {args.steps} steps, "
        f"windows of {args.window} frames; {time.perf_counter() - started:.0f} s"
    )
    print_tables(records, args.lengths, args.refresh, args.window)
    write_output(args, {"seeds": seeds, "clips": records})
    return 0


def print_tables(records: list[dict[str, Any]], lengths: list[int], refresh: list[int], window: int) -> None:
    """One Markdown table per measure, the mean over scenes: rows length x refresh (and the input's own
    warp error), columns the windows of the longest length."""
    longest = max(lengths)
    for measure, title, fmt in (
        ("accuracy", "Edit accuracy per window ↑", "{:.2f}"),
        ("warp", "Warp error per window ↓", "{:.1f}"),
    ):
        print(f"\n**{title}** (mean over scenes; refresh 0 = the paper's single anchor)\n")
        windows = range(0, longest, window)
        print("| frames | refresh | " + " | ".join(f"{w}–{w + window - 1}" for w in windows) + " |")
        print("|---:|---:|" + "---:|" * len(windows))
        rows: list[tuple[int | str, int]] = [("input", 0)] if measure == "warp" else []
        rows += [(n, k) for n in lengths for k in refresh]
        for n, k in rows:
            if n == "input":  # the input's floor: the same frames whatever the refresh
                key, chosen = (
                    "input_warp",
                    [r for r in records if r["frames"] == longest and r["anchor_refresh"] == refresh[0]],
                )
            else:
                key, chosen = measure, [r for r in records if r["frames"] == n and r["anchor_refresh"] == k]
            cells = []
            for w in windows:
                values = [x[key] for r in chosen for x in r["windows"] if x["start"] == w]
                values = [v for v in values if v is not None and np.isfinite(v)]
                cells.append(fmt.format(np.mean(values)) if values else "–")
            print(f"| {n} | {'' if n == 'input' else k} | " + " | ".join(cells) + " |")


def first_frames(task: EditTask, n: int) -> EditTask:
    """The same edit on the clip's first n frames (what the world renders for that scene at n frames)."""
    from dataclasses import replace

    c = task.clip
    if n == len(c.frames):
        return task
    clip = replace(
        c,
        frames=c.frames[:n],
        depth=c.depth[:n],
        masks=c.masks[:n],
        ids=c.ids[:n],
        flow=c.flow[: n - 1],
        captions=c.captions[:n],
    )
    return replace(task, clip=clip)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of how a toy benchmark runs, shared with masked_edit.py: steps, scene size, device,
    dtype, threads, JSON output."""
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=None, help="scene size in pixels (default the world's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--output", type=Path, help="write every figure as JSON here")


def write_output(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Every figure so far and the run's flags as JSON at --output (none: nothing written)."""
    if args.output:
        args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **figures}))


def load_editor(args: argparse.Namespace) -> Pix2Video:
    """--model on --device in --dtype, torch on --threads CPU threads."""
    import torch

    from pipeline.method.editor import Pix2Video
    from pipeline.models.loading import load_diffusion_models, resolve_model

    torch.set_num_threads(args.threads)
    return Pix2Video(load_diffusion_models(resolve_model(args.model), dtype=args.dtype, device=args.device))


def toy_task(seed: int, frames: int, size: int | None = None) -> EditTask:
    """`toyworld.benchmark.edit_task`, with `size` on the scene rendered at that size (the tiny model's
    64 pixels, say)."""
    from toyworld.benchmark import edit_task
    from toyworld.world import random_scene, render

    clip = render(random_scene(seed, frames=frames, size=size)) if size else None
    return edit_task(seed, frames, clip=clip)


if __name__ == "__main__":
    raise SystemExit(main())
