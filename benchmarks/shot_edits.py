"""Shot cuts in the editor, on the toy models: is each shot of a joined clip edited exactly as that shot
edited alone, and how far is that from editing the joined clip as one shot (the paper's single anchor)?

    python benchmarks/shot_edits.py                         # toy models, 4 held-out pairs of 16 + 16 frames
    python benchmarks/shot_edits.py --model tiny --frames 6 --steps 2 --size 64 --pairs 1   # the machinery only

A pair is two held-out toy clips (seeds s and s + 1, as `shot_cuts.py` joins them) put end to end.
The shots are what the pipeline detects (`pipeline.io.shots.detect_shots`); each shot's source prompt
is its own first frame's caption, and the whole clip gets one target prompt, the first clip's colour
edit (`toyworld.benchmark.edit_task`), as a user gives one prompt per clip. Three edits per pair, all
with true disparity as depth:

- split: the joined clip through `Pix2Video.invert_shots` + `edit_shots` (what the pipeline runs);
- alone: each clip edited by itself;
- one shot: the joined clip inverted and edited as one video, anchored on its first frame.

Reported per shot: the largest and mean absolute difference of the decoded frames (grey levels,
0-255) of split and one shot against alone. Split should differ from alone only by float order
(batches of other sizes); one shot differs in the second clip, which it paints from the first's anchor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_video import add_run_arguments, load_editor, toy_task, write_output  # noqa: E402 - shared toy parts
from shot_cuts import HELD_OUT  # noqa: E402 - the pairs shot_cuts.py measures detection on


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy", help="diffusion model (default toy)")
    parser.add_argument("--pairs", type=int, default=4, help="joined pairs (default 4)")
    parser.add_argument("--seed", type=int, default=HELD_OUT, help=f"first seed (default {HELD_OUT}, held out)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip of a pair (default 16)")
    add_run_arguments(parser)
    args = parser.parse_args(argv)

    from pipeline.io.shots import MIN_SHOT_FRAMES, detect_shots, shot_ranges
    from pipeline.method.editor import EditConfig

    editor = load_editor(args)
    config = EditConfig(steps=args.steps)
    started = time.perf_counter()
    records: list[dict[str, Any]] = []

    def decoded(latents: Any) -> np.ndarray:
        return np.stack(list(editor.decode(latents, config.decode_batch))).astype(np.int16)

    for i in range(args.pairs):
        tasks = [toy_task(args.seed + 2 * i + j, args.frames, args.size) for j in (0, 1)]
        frames = np.concatenate([t.clip.frames for t in tasks])
        depth = [d for t in tasks for d in t.clip.disparity]
        target = [tasks[0].target_prompt]
        shots = detect_shots(frames, min_shot=min(MIN_SHOT_FRAMES, args.frames))
        row: dict[str, Any] = {"seeds": [args.seed + 2 * i, args.seed + 2 * i + 1], "shots": shots}
        if shots != [0, args.frames]:  # the comparison below needs the true cut; shot_cuts.py counts misses
            row["skipped"] = f"detected {shots}, not [0, {args.frames}]"
            records.append(row)
            print(f"pair {i}: {row['skipped']}", file=sys.stderr)
            continue

        video = editor.prepare(frames, depth, video_id=f"pair-{i}")
        pieces = editor.invert_shots(video, shots, [t.source_prompt for t in tasks], config)
        (split,) = editor.edit_shots([[(shot, zT, target) for shot, zT in pieces]], config)
        (whole,) = editor.edit(video, editor.invert(video, tasks[0].source_prompt, config), target, config)
        split_frames, whole_frames = decoded(split[0]), decoded(whole)

        row["per_shot"] = []
        for (start, stop), task in zip(shot_ranges(shots, len(frames)), tasks, strict=True):
            alone_video = editor.prepare(task.clip.frames, list(task.clip.disparity), video_id=f"pair-{i}")
            zT = editor.invert(alone_video, task.source_prompt, config)
            (alone,) = editor.edit(alone_video, zT, target, config)
            alone_frames = decoded(alone)
            shot: dict[str, Any] = {"frames": [start, stop]}
            for name, edited in (("split", split_frames), ("one_shot", whole_frames)):
                diff = np.abs(edited[start:stop] - alone_frames)
                shot |= {f"{name}_vs_alone_max": int(diff.max()), f"{name}_vs_alone_mean": float(diff.mean())}
            row["per_shot"].append(shot)
        records.append(row)
        write_output(args, {"pairs": records})
        print(f"pair {i}: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    done = [r for r in records if "per_shot" in r]
    print(
        f"{len(done)} of {len(records)} held-out pairs with the cut found ({args.frames} + {args.frames} frames, "
        f"seeds from {args.seed}), model {args.model}, {args.steps} steps; {time.perf_counter() - started:.0f} s\n"
    )
    print("| shot | split vs alone: largest, mean | one shot vs alone: largest, mean |")
    print("|---|---:|---:|")
    for k, name in enumerate(("first (frames 0 to cut)", "second (cut to end)")):
        measured = [r["per_shot"][k] for r in done]
        if not measured:
            continue
        cells = [
            f"{max(s[f'{m}_max'] for s in measured)}, {np.mean([s[f'{m}_mean'] for s in measured]):.3f}"
            for m in ("split_vs_alone", "one_shot_vs_alone")
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    write_output(args, {"pairs": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
