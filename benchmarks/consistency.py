"""Pix2Video's temporal consistency on the toy world, against its true flow (issue 27).

    python benchmarks/consistency.py flow    --seeds 2000100 --clips 4     # estimated vs true flow, no model
    python benchmarks/consistency.py sweep   --clips 2 --sizes 64,128,192 --weights 0,100,200,400,800
    python benchmarks/consistency.py steps   --clips 2                      # where in the steps the update acts
    python benchmarks/consistency.py ablate  --clips 8 --output toy-work/consistency.json

- flow: Farnebäck and DIS flow of the input clip (what the method can know) against the renderer's true
  flow: end-point error in pixels and in latent cells (block-averaged to the 4x latent), and the
  forward-backward consistency mask against the true occlusions (a pixel of frame t is truly visible
  in t+1 when the object id at its true target is its own).
- sweep: the latent update's weight λ at several scene sizes (latent sizes of the toy world), Pix2Video
  against per-frame editing from the same inversion: is the best per-element step the same at every
  size (then the per-element rule of `steps.REFERENCE_LATENT_ELEMENTS` is right and only λ is in
  question) or does it follow the latent's own size (the published rule)?
- steps: one Pix2Video edit traced step by step: per step, the mean |x̂0 − x̂0_prev| inside the object,
  unwarped and warped along the true and the estimated flow, and the size of the update.
- ablate: per-frame editing, the paper's Pix2Video and each option beyond the paper (alone and
  together) on every clip x (colour, texture) edit, the same inversion and seeds for all; every
  ground-truth and paper metric per clip, the seconds each edit took, JSON after every clip.

Held-out scenes from 2,000,000 (`toyworld.benchmark.BENCH_SEED`); true depth; one torch thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VAE_FACTOR = 4  # the toy VAE's pixels per latent cell


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _write(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures, indent=1, default=float))
        tmp.replace(path)


# ------------------------------------------------------------------------------------------- flow


def true_visibility(clip: Any, t: int) -> np.ndarray:
    """bool [H,W] on frame t's grid: the point seen there is still seen at its true place in t+1."""
    n, h, w = clip.ids.shape
    yy, xx = np.mgrid[0:h, 0:w]
    tx = np.rint(xx + clip.flow[t, ..., 0]).astype(int)
    ty = np.rint(yy + clip.flow[t, ..., 1]).astype(int)
    inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    ok = inside.copy()
    ok[inside] = clip.ids[t + 1][ty[inside], tx[inside]] == clip.ids[t][inside]
    return ok


def _block(x: np.ndarray, f: int) -> np.ndarray:
    h, w = x.shape[:2]
    return x.reshape(h // f, f, w // f, f, *x.shape[2:]).mean(axis=(1, 3))


def flow_figures(seeds: list[int], frames: int, size: int | None) -> dict[str, Any]:
    from pipeline.io.flow import ESTIMATORS, pair_flow
    from pipeline.quality.flow import consistency_mask
    from toyworld.world import random_scene, render

    out: dict[str, Any] = {"seeds": seeds, "per_clip": []}
    for seed in seeds:
        clip = render(random_scene(seed, frames=frames, size=size))
        row: dict[str, Any] = {"seed": seed, "true_speed_px": float(np.linalg.norm(clip.flow, axis=-1).mean())}
        for name in ESTIMATORS:
            epe, epe_obj, epe_lat, prec, rec, kept, secs = [], [], [], [], [], [], []
            for t in range(frames - 1):
                started = time.perf_counter()
                fwd, bwd = pair_flow(clip.frames[t], clip.frames[t + 1], name)
                secs.append(time.perf_counter() - started)
                true = clip.flow[t]
                vis = true_visibility(clip, t)
                err = np.linalg.norm(fwd - true, axis=-1)
                epe.append(float(err[vis].mean()))
                obj = vis & (clip.ids[t] >= 0)
                if obj.any():
                    epe_obj.append(float(err[obj].mean()))
                lat = np.linalg.norm(_block(fwd, VAE_FACTOR) - _block(true, VAE_FACTOR), axis=-1) / VAE_FACTOR
                epe_lat.append(float(lat.mean()))
                # the mask on frame t's grid: forward t->t+1 followed by backward comes back
                mask = consistency_mask(fwd, bwd)
                kept.append(float(mask.mean()))
                prec.append(float(vis[mask].mean()) if mask.any() else float("nan"))
                rec.append(float(mask[vis].mean()))
            row[name] = {
                "epe_px": float(np.mean(epe)),
                "epe_object_px": float(np.mean(epe_obj)) if epe_obj else None,
                "epe_latent_cells": float(np.mean(epe_lat)),
                "mask_kept": float(np.mean(kept)),
                "mask_precision": float(np.nanmean(prec)),  # kept pixels that are truly visible
                "mask_recall": float(np.mean(rec)),  # truly visible pixels that are kept
                "seconds_per_pair": float(np.mean(secs)),
            }
            # zero flow, the paper's implicit assumption, as the reference point
        row["zero_flow_epe_px"] = float(
            np.mean([np.linalg.norm(clip.flow[t], axis=-1)[true_visibility(clip, t)].mean() for t in range(frames - 1)])
        )
        row["true_occluded_share"] = float(np.mean([1 - true_visibility(clip, t).mean() for t in range(frames - 1)]))
        out["per_clip"].append(row)
        print(json.dumps(row), flush=True)
    return out


# ------------------------------------------------------------------------------------------ editor


def load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The toy editor, the toy CLIP scorer and the texture reader, on one torch thread."""
    import torch

    from pipeline.method.editor import Pix2Video
    from pipeline.models.loading import load_diffusion_models, resolve_model
    from pipeline.quality.clip import ClipScorer
    from toyworld.texture import find_reader

    torch.set_num_threads(args.threads)
    models = load_diffusion_models(resolve_model(args.model), dtype="float32", device=None)
    scorer = ClipScorer.from_model(args.model, device=models.device)
    return Pix2Video(models), scorer, find_reader(resolve_model(args.model))


class TimedEditor:
    """The editor, with the seconds of every edit call kept per configuration (what an option costs)."""

    def __init__(self, editor: Any) -> None:
        self.editor = editor
        self.seconds: list[tuple[dict[str, Any], float, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.editor, name)

    def edit(self, video: Any, zT: Any, prompts: Any, config: Any) -> Any:
        from dataclasses import asdict

        started = time.perf_counter()
        out = self.editor.edit(video, zT, prompts, config)
        self.seconds.append((asdict(config), time.perf_counter() - started, video.num_frames))
        return out


def run_variants(args: argparse.Namespace, variants: list[Any], size: int | None, tag: str) -> list[dict[str, Any]]:
    """Every variant on every clip x edit; rows with the frames dropped, JSON after every clip."""
    from pipeline.method.editor import EditConfig
    from toyworld.benchmark import BENCH_SEED, edit_task, edit_variants
    from toyworld.world import random_scene, render

    editor, scorer, reader = args.loaded
    timed = TimedEditor(editor)
    rows: list[dict[str, Any]] = []
    base = EditConfig(steps=args.steps, seed=0)
    seeds = range(args.seed or BENCH_SEED, (args.seed or BENCH_SEED) + args.clips)
    for seed in seeds:
        clip = render(random_scene(seed, frames=args.frames, size=size))
        for attribute in args.edits.split(","):
            task = edit_task(seed, args.frames, attribute, clip)
            timed.seconds.clear()
            clip_rows = edit_variants(timed, task, list(clip.disparity), variants, base, scorer, reader)
            edits = iter(timed.seconds)
            for r in clip_rows:
                r.pop("frames", None)
                r["size"] = size or clip.frames.shape[1]
                r["tag"] = tag
                if r["variant"] != "input video" and "SDEdit" not in r["variant"]:
                    _, secs, n = next(edits)
                    r["seconds_per_frame"] = secs / n
            rows += clip_rows
            args.figures.setdefault("rows", []).extend(clip_rows)
            _write(args.output, args.figures)
            summary = ", ".join(
                f"{r['variant']} warp {r.get('warp_error', np.nan):.1f} acc {r.get('edit_accuracy', np.nan):.2f}"
                for r in clip_rows[1:]
            )
            print(f"{tag} seed {seed} {attribute}: {summary}", flush=True)
    return rows


def weight_variants(weights: list[float]) -> list[Any]:
    from toyworld.benchmark import PER_FRAME, Variant

    out = [Variant(PER_FRAME, "none", False)]
    for w in weights:
        if w == 0:
            out.append(Variant("update off", "anchor+prev", False))
        else:
            out.append(Variant(f"λ={w:g}", "anchor+prev", True, config=(("update_weight", w),)))
    return out


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("flow", "sweep", "steps", "ablate"))
    parser.add_argument("--model", default="toy")
    parser.add_argument("--seed", type=int, default=None, help="first held-out seed (default 2,000,000)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--edits", default="colour,texture")
    parser.add_argument("--sizes", default="128", help="scene sizes in pixels (sweep)")
    parser.add_argument("--weights", default="0,100,400", help="λ values (sweep)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.figures = {"args": {k: str(v) for k, v in vars(args).items()}}
    from toyworld.benchmark import BENCH_SEED

    first = args.seed or BENCH_SEED
    if args.what == "flow":
        size = _ints(args.sizes)[0]
        args.figures.update(flow_figures(list(range(first, first + args.clips)), args.frames, size))
        _write(args.output, args.figures)
        return 0
    args.loaded = load(args)
    if args.what == "sweep":
        for size in _ints(args.sizes):
            run_variants(args, weight_variants(_floats(args.weights)), size, f"size {size}")
        return 0
    raise SystemExit(f"{args.what}: not written yet")


if __name__ == "__main__":
    raise SystemExit(main())
