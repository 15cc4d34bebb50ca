"""Shot-cut detection on the toy world's ground truth: joined clip pairs (one true cut) and unjoined
clips (no cut; camera pans and zooms included). No model is involved.

    python benchmarks/shot_cuts.py                       # 40 pairs + 40 clips, held-out seeds (~5 min)
    python benchmarks/shot_cuts.py --pairs 8 --clips 8   # quicker
    python benchmarks/shot_cuts.py --seed 0              # the tuning seeds the defaults were chosen on

A pair is two toy clips of `--frames` frames each (seeds s and s + 1), joined: the true cut is before
frame `--frames`. A found cut is a detected shot list equal to [0, frames] (within `--tolerance`
frames); anything else detected in a pair, or any cut in an unjoined clip of 2 x `--frames` frames, is
a false cut. Each detector sees the same frames. The pipeline's detector is `pipeline.io.shots.
detect_shots` (PySceneDetect's AdaptiveDetector); PySceneDetect's fixed-threshold ContentDetector and
HistogramDetector at their defaults are the comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HELD_OUT = 3_000_000  # seeds no other benchmark or trainer uses (training 0.., heldout 1e6.., edits 2e6..)


def _library(name: str, min_shot: int) -> Callable[[np.ndarray], list[int]]:
    """A PySceneDetect detector at its defaults (but `min_scene_len`), as a frames -> shots function."""

    def detect(frames: np.ndarray) -> list[int]:
        import scenedetect

        detector = getattr(scenedetect, name)(min_scene_len=min_shot)
        cuts = []
        for i, frame in enumerate(frames):
            tc = scenedetect.FrameTimecode(i, 25.0)
            cuts += [c.frame_num for c in detector.process_frame(tc, np.ascontiguousarray(frame[..., ::-1]))]
        cuts += [c.frame_num for c in detector.post_process(scenedetect.FrameTimecode(len(frames) - 1, 25.0))]
        return [0] + sorted({c for c in cuts if 0 < c < len(frames)})

    return detect


def detectors(min_shot: int) -> dict[str, Callable[[np.ndarray], list[int]]]:
    from pipeline.io.shots import detect_shots

    return {
        "pipeline: detect_shots (AdaptiveDetector)": lambda f: detect_shots(f, min_shot=min_shot),
        "ContentDetector (threshold 27)": _library("ContentDetector", min_shot),
        "HistogramDetector (threshold 0.2)": _library("HistogramDetector", min_shot),
    }


def motion(scene) -> str:
    return {(True, False): "pan", (False, True): "zoom", (True, True): "pan+zoom"}.get(
        (scene.pan != 0.0, scene.zoom != 0.0), "still camera"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=40, help="joined clip pairs (default 40)")
    parser.add_argument("--clips", type=int, default=40, help="unjoined clips (default 40)")
    parser.add_argument("--frames", type=int, default=16, help="frames per joined clip; unjoined clips have twice")
    parser.add_argument("--seed", type=int, default=HELD_OUT, help=f"first seed (default {HELD_OUT}, held out)")
    parser.add_argument("--tolerance", type=int, default=0, help="frames a found cut may be off (default 0)")
    parser.add_argument("--min-shot", type=int, default=None, help="shortest shot (default the pipeline's)")
    parser.add_argument("--output", type=Path, help="write the per-clip results as JSON here")
    args = parser.parse_args(argv)

    import torch

    from pipeline.io.shots import MIN_SHOT_FRAMES
    from toyworld.world import random_scene, render

    torch.set_num_threads(1)
    n = args.frames
    found = detectors(args.min_shot or min(MIN_SHOT_FRAMES, n))
    tally = {name: {"found": 0, "pair_false": 0, "clip_false": 0} for name in found}
    kinds: dict[str, int] = {}
    records = []
    started = time.perf_counter()
    for i in range(args.pairs):
        a = render(random_scene(args.seed + 2 * i, frames=n))
        b = render(random_scene(args.seed + 2 * i + 1, frames=n))
        frames = np.concatenate([a.frames, b.frames])
        row = {"kind": "pair", "seeds": [a.scene.seed, b.scene.seed], "motion": [motion(a.scene), motion(b.scene)]}
        for name, detect in found.items():
            shots = detect(frames)
            row[name] = shots
            cuts = shots[1:]
            hit = any(abs(c - n) <= args.tolerance for c in cuts)
            tally[name]["found"] += hit
            tally[name]["pair_false"] += len(cuts) - hit
        records.append(row)
    for i in range(args.clips):
        scene = random_scene(args.seed + 100_000 + i, frames=2 * n)
        kinds[motion(scene)] = kinds.get(motion(scene), 0) + 1
        clip = render(scene)
        row = {"kind": "clip", "seeds": [scene.seed], "motion": [motion(scene)]}
        for name, detect in found.items():
            shots = detect(clip.frames)
            row[name] = shots
            tally[name]["clip_false"] += len(shots) - 1
        records.append(row)
    seconds = time.perf_counter() - started

    print(
        f"{args.pairs} joined pairs ({n}+{n} frames, cut before frame {n}) and {args.clips} unjoined clips "
        f"({2 * n} frames: {', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}); seeds from {args.seed}; "
        f"{seconds:.0f} s"
    )
    print()
    print("| detector | cuts found (of pairs) | false cuts in pairs | false cuts in unjoined clips |")
    print("| --- | --- | --- | --- |")
    for name, t in tally.items():
        share = t["found"] / args.pairs if args.pairs else float("nan")
        print(f"| {name} | {t['found']}/{args.pairs} ({share:.0%}) | {t['pair_false']} | {t['clip_false']} |")
    if args.output:
        args.output.write_text(json.dumps({"args": vars(args) | {"output": str(args.output)}, "rows": records}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
