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
SIZE = 128  # the toy world's frame size (toyworld.world.SIZE), what the toy models were trained at


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
        clip = render(random_scene(seed, frames=frames, size=size or SIZE))
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
        clip = render(random_scene(seed, frames=args.frames, size=size or SIZE))
        for attribute in args.edits.split(","):
            if (seed, attribute) in args.done:  # --resume: this edit's rows are carried over
                continue
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


def step_figures(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per step of a traced Pix2Video edit (frames after the anchor, inside the edited object's latent
    cells): the mean |x̂0 − x̂0_prev| unwarped, warped along the true flow and along the estimated one,
    and the mean |Δz| the update made. The true backward flow i → i−1 is taken as minus the true forward
    flow i−1 → i at the same pixel (the toy world's motion is smooth and under 2 px a frame)."""
    import torch

    from pipeline.io.flow import TO_PREV, video_flow
    from pipeline.method.editor import EditConfig
    from pipeline.method.steps import warp_latent
    from toyworld.benchmark import edit_task
    from toyworld.world import random_scene, render

    editor = args.loaded[0]
    out = []
    for seed in range(args.seed, args.seed + args.clips):
        clip = render(random_scene(seed, frames=args.frames))
        for attribute in args.edits.split(","):
            task = edit_task(seed, args.frames, attribute, clip)
            cfg = EditConfig(steps=args.steps, update_weight=args.weights and _floats(args.weights)[0] or 100.0)
            video = editor.prepare(clip.frames, list(clip.disparity))
            zT = editor.invert(video, task.source_prompt, cfg)
            traces: dict[tuple[int, int], Any] = {}
            keep = lambda s, kept=traces: kept.__setitem__((s.frame, s.step), s)  # noqa: E731
            editor.edit(video, zT, [task.target_prompt], cfg, trace=keep)
            f = VAE_FACTOR
            true_b = np.zeros((args.frames, 2, *video.latents.shape[2:]), np.float32)
            for i in range(1, args.frames):
                true_b[i] = -_block(clip.flow[i - 1], f).transpose(2, 0, 1) / f
            est = video_flow(clip.frames, f)[:, TO_PREV]
            cells = [_block(m.astype(np.float32), f) > 0.5 for m in clip.masks[:, task.obj]]
            inside = torch.from_numpy(np.stack(cells))
            for k in range(args.steps):
                row: dict[str, Any] = {"seed": seed, "edit": attribute, "step": k}
                sums = {"raw": [], "true": [], "estimated": [], "update": []}
                for i in range(1, args.frames):
                    x0, prev, t = traces[i, k].x0, traces[i - 1, k].x0, traces[i, k]
                    m = inside[i]
                    if not m.any():
                        continue
                    flows = {"true": torch.from_numpy(true_b[i : i + 1]), "estimated": torch.from_numpy(est[i : i + 1])}
                    sums["raw"].append(float((x0 - prev).abs()[:, m].mean()))
                    for name, fl in flows.items():
                        sums[name].append(float((x0 - warp_latent(prev[None], fl)[0]).abs()[:, m].mean()))
                    sums["update"].append(float((t.z - t.z_ddim).abs()[:, m].mean()))
                row.update({f"x0_diff_{n}" if n != "update" else "update": float(np.mean(v)) for n, v in sums.items()})
                out.append(row)
                print(json.dumps(row), flush=True)
            args.figures["steps"] = out
            _write(args.output, args.figures)
    return out


def timing(args: argparse.Namespace, rounds: int = 3) -> dict[str, Any]:
    """Seconds per frame of the edit (steps 4-7) for the paper's method and each option, side by side:
    the variants interleaved, `rounds` times, the fastest round of each kept (the machine is shared);
    plus the flow's own seconds per frame (`video_flow`, DIS), which prepare adds once per video."""
    from dataclasses import replace

    from pipeline.io.flow import video_flow
    from pipeline.method.editor import EditConfig
    from toyworld.benchmark import edit_task

    editor = args.loaded[0]
    task = edit_task(args.seed, args.frames, "colour")
    clip = task.clip
    base = EditConfig(steps=args.steps)
    video = editor.prepare(clip.frames, list(clip.disparity))
    zT = editor.invert(video, task.source_prompt, base)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for v in option_variants()[1:]:
            cfg = replace(base, injection=v.injection, latent_update=v.latent_update, **dict(v.config))
            started = time.perf_counter()
            editor.edit(video, zT, [task.target_prompt], cfg)
            secs = (time.perf_counter() - started) / args.frames
            best[v.label] = min(best.get(v.label, np.inf), secs)
        started = time.perf_counter()
        video_flow(clip.frames, VAE_FACTOR)
        flow = (time.perf_counter() - started) / args.frames
        best["flow (DIS)"] = min(best.get("flow (DIS)", np.inf), flow)
    paper = best[PAPER]
    out = {k: {"seconds_per_frame": s, "vs_paper": s / paper} for k, s in best.items()}
    print(json.dumps(out, indent=1))
    return out


def overhead(args: argparse.Namespace, reps: int = 30) -> dict[str, float]:
    """What the options add per (frame, step) item against the UNet call they sit beside, each timed as
    the fastest of `reps` (robust on a shared machine): the warp, the fusion and the flow-aware update
    on one toy latent, and one toy UNet call of one item with both guidance branches; plus `video_flow`
    per frame on a held-out clip."""
    import torch

    from pipeline.io.flow import video_flow
    from pipeline.method.steps import flow_fusion, latent_update, warp_latent
    from toyworld.world import random_scene, render

    editor = args.loaded[0]
    unet = editor.models.unet
    h = SIZE // VAE_FACTOR
    g = torch.Generator().manual_seed(0)
    z, x0, prev = (torch.randn(1, 4, h, h, generator=g) for _ in range(3))
    flow = torch.rand(1, 3, h, h, generator=g)
    sample = torch.randn(2, 5, h, h, generator=g)
    emb = editor.encode_text(["a red ball", ""])

    def fastest(fn: Any) -> float:
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    def options() -> None:
        warped, valid = warp_latent(prev, flow), flow[:, 2:3]
        zf, xf = flow_fusion(z, x0, warped, valid, 0.5, torch.tensor(0.9))
        latent_update(zf, xf, warped, 100.0, valid=valid)

    clip = render(random_scene(args.seed, frames=args.frames)).frames
    with torch.no_grad():
        out = {
            "options_per_item_s": fastest(options),
            "unet_per_item_s": fastest(lambda: unet(sample, 500, emb)),
            "flow_per_frame_s": fastest(lambda: video_flow(clip, VAE_FACTOR)) / args.frames,
        }
    out["options_vs_unet"] = out["options_per_item_s"] / out["unet_per_item_s"]
    out["flow_vs_unet_steps"] = out["flow_per_frame_s"] / (args.steps * out["unet_per_item_s"])
    print(json.dumps(out, indent=1))
    return out


COLUMNS = (
    ("warp_error", "Warp err. ↓", "{:.1f}"),
    ("edit_accuracy", "Edit acc. ↑", "{:.3f}"),
    ("structure_iou", "Mask IoU ↑", "{:.3f}"),
    ("clip_text", "CLIP-Text ↑", "{:.3f}"),
    ("outside_psnr", "PSNR outside ↑", "{:.2f}"),
    ("pixel_mse", "Pixel-MSE ↓", "{:.2f}"),
)


def tables(paths: list[Path]) -> str:
    """Markdown: per edit kind, every variant's means, its warp error over per-frame editing's and over
    the paper's (ratio of the means, and the per-clip ratios), from the JSON of `ablate` runs."""
    from toyworld.benchmark import PER_FRAME

    rows = [r for p in paths for r in json.loads(p.read_text())["rows"] if r["variant"] != "input video"]
    out = []
    for edit in ("colour", "texture"):
        mine = [r for r in rows if r["edit"] == edit]
        seeds = sorted({r["seed"] for r in mine})
        warp = {(r["variant"], r["seed"]): r["warp_error"] for r in mine}
        variants = list(dict.fromkeys(r["variant"] for r in mine))
        titles = [t for _, t, _ in COLUMNS] + ["÷ per-frame", "÷ paper", "per clip ÷ per-frame"]
        head = "| Variant | " + " | ".join(titles) + " |"
        rule = "|---|" + "---:|" * (len(COLUMNS) + 3)
        lines = [f"**{edit.capitalize()} edits** ({len(seeds)} clips)", "", head, rule]

        def mean(v: str, k: str, mine: list[dict[str, Any]] = mine) -> float:
            return float(np.nanmean([r.get(k, np.nan) for r in mine if r["variant"] == v]))

        for v in variants:
            cells = [f.format(mean(v, k)) for k, _, f in COLUMNS]
            per_frame = mean(v, "warp_error") / mean(PER_FRAME, "warp_error")
            paper = mean(v, "warp_error") / mean(PAPER, "warp_error")
            clips = ", ".join(f"{warp[v, s] / warp[PER_FRAME, s]:.2f}" for s in seeds if (v, s) in warp)
            lines.append(f"| {v} | " + " | ".join(cells) + f" | {per_frame:.2f} | {paper:.2f} | {clips} |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


PAPER = "Pix2Video (paper, λ=100)"


def option_variants() -> list[Any]:
    """Per-frame editing, the paper's Pix2Video, and the options beyond it, alone and together."""
    from toyworld.benchmark import PER_FRAME, Variant

    fusion = (("fusion_steps", 5), ("fusion_weight", 0.5))
    strong = (("update_weight", 400.0),)
    return [
        Variant(PER_FRAME, "none", False),
        Variant(PAPER, "anchor+prev", True),
        Variant("λ=400", "anchor+prev", True, config=strong),
        Variant("flow update", "anchor+prev", True, config=(("flow_update", True),)),
        Variant("fusion (last 5, 0.5)", "anchor+prev", True, config=fusion),
        Variant("λ=400 + flow update", "anchor+prev", True, config=(*strong, ("flow_update", True))),
        Variant("λ=400 + fusion", "anchor+prev", True, config=(*strong, *fusion)),
        Variant("λ=400 + flow update + fusion", "anchor+prev", True, config=(*strong, ("flow_update", True), *fusion)),
    ]


def fusion_variants() -> list[Any]:
    """The fusion's settings around the first one (last 5 steps, weight 0.5), at the paper's λ, with the two
    baselines, so that one run's JSON holds every ratio."""
    from toyworld.benchmark import PER_FRAME, Variant

    return [
        Variant(PER_FRAME, "none", False),
        Variant(PAPER, "anchor+prev", True),
        *(
            Variant(f"fusion (last {k}, {w:g})", "anchor+prev", True, config=(("fusion_steps", k), ("fusion_weight", w)))  # noqa: E501
            for k, w in ((5, 0.5), (3, 0.5), (2, 0.5), (5, 0.3), (3, 0.3), (10, 0.3))
        ),
    ]


def gated_variants() -> list[Any]:
    """The fusion gated by agreement (`fusion_tolerance`; d's median on the toy clips is about 0.04, its
    90th percentile 0.13); run beside `--set fusion`, whose JSON holds the baselines of the same seeds."""
    from toyworld.benchmark import Variant

    return [
        Variant(
            f"fusion (last {k}, {w:g}, τ {t:g})",
            "anchor+prev",
            True,
            config=(("fusion_steps", k), ("fusion_weight", w), ("fusion_tolerance", t)),
        )
        for k, w, t in ((5, 0.5, 0.1), (5, 0.5, 0.2), (10, 0.3, 0.2), (10, 0.5, 0.1))
    ]


def flow_cost(seeds: list[int], frames: int, size: int | None) -> dict[str, float]:
    """Seconds per frame of `video_flow` (both directions, the mask, the latent grid) on the toy clips."""
    from pipeline.io.flow import ESTIMATORS, video_flow
    from toyworld.world import random_scene, render

    clips = [render(random_scene(s, frames=frames, size=size or SIZE)).frames for s in seeds]
    out = {}
    for name in ESTIMATORS:
        started = time.perf_counter()
        for c in clips:
            video_flow(c, VAE_FACTOR, name)
        out[name] = (time.perf_counter() - started) / sum(len(c) for c in clips)
    return out


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("flow", "sweep", "steps", "ablate", "table", "timing", "overhead"))
    parser.add_argument("inputs", nargs="*", type=Path, help="table: the JSON files of ablate runs")
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
    parser.add_argument("--set", choices=("options", "fusion", "gated"), default="options", help="ablate: variants")
    parser.add_argument("--resume", type=Path, default=None, help="a stopped run's JSON: keep its edits' rows")
    args = parser.parse_args(argv)
    args.figures = {"args": {k: str(v) for k, v in vars(args).items()}}
    args.done = set()
    if args.resume is not None:
        rows = json.loads(args.resume.read_text()).get("rows", [])
        args.figures["rows"] = rows
        args.done = {(r["seed"], r["edit"]) for r in rows}
    from toyworld.benchmark import BENCH_SEED

    first = args.seed or BENCH_SEED
    if args.what == "table":
        print(tables(args.inputs))
        return 0
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
    if args.what == "overhead":
        args.seed = first
        args.figures["overhead"] = overhead(args)
        _write(args.output, args.figures)
        return 0
    if args.what == "timing":
        args.seed = first
        args.figures["timing"] = timing(args)
        _write(args.output, args.figures)
        return 0
    if args.what == "steps":
        args.seed = first
        step_figures(args)
        return 0
    if args.what == "ablate":
        args.figures["flow_seconds_per_frame"] = flow_cost(list(range(first, first + args.clips)), args.frames, None)
        sets = {"options": option_variants, "fusion": fusion_variants, "gated": gated_variants}
        run_variants(args, sets[args.set](), None, "ablate")
        return 0
    raise SystemExit(f"{args.what}: not written yet")


if __name__ == "__main__":
    raise SystemExit(main())
