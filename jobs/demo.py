"""The whole pipeline on a generated dataset, on a local Ray instance, with the toy world's models.

    pix2video demo                      # writes ./demo-output/ (toy world, a few minutes on a laptop CPU)
    pix2video demo --model tiny         # moving shapes and tiny random models: the machinery in seconds
    pix2video demo --videos 1 --frames 8 --steps 10     # smaller and faster

With the default `--model toy`, renders held-out clips of the toy world (objects the toy models never
saw), writes them with a manifest (JSON lines: video, two target prompts per clip, one that changes an
object's colour and one that changes its texture to a kind the prompt names while its pattern (angle,
phase, tint) is left free, and labels), and edits every clip with every prompt three times with the
toy models committed in toyworld/model/ (our own small SD2-depth, DPT, BLIP and CLIP, trained on that
world), each time exactly as `pix2video run` does:

    demo-output/edits/       Pix2Video as the paper has it, the default (anchor + previous-frame
                             attention, latent update)
    demo-output/per-frame/   per-frame editing: every frame from the same DDIM inversion, alone
                             (`--injection none --no-latent-update`), the baseline the method improves on
    demo-output/fusion/      Pix2Video with the steadiest option beyond the paper, opt-in (`--fusion-steps 5
                             --fusion-weight 0.5`: the last steps pull each frame's x̂0 towards the previous
                             frame's, warped along the input's flow; docs/METHOD.md, "Beyond the paper")
    demo-output/precompute/  the store the runs share (`--precompute-store`): frames, depth, captions, the
                             flow and the inversions are made once

then writes the HTML report of the edits with the per-frame run as its baseline and the fusion after
them (`pix2video report demo-output/edits --baseline demo-output/per-frame --compare
"Pix2Video + fusion (opt-in)=demo-output/fusion"`): per clip and prompt, input, per-frame editing,
Pix2Video and Pix2Video + fusion playing side by side, a frame strip and every run's metrics. The edits
are recognisable and the metrics mean something within the toy world. It is not SD2's quality.
`--no-baseline` and `--no-fusion` skip those runs.

With `--model tiny` the clips are 64x64 moving shapes and the pictures are noise-like: that shows the
machinery (manifest, Ray precompute and editor actors, a shared store, mp4s, results, resume, the
report), not the method. For real edits use the published model:

    pix2video run --manifest demo-output/manifest.jsonl --output edits/ --model stabilityai/stable-diffusion-2-depth
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

from jobs import _common
from pipeline.errors import InputError


@dataclass(frozen=True)
class Scale:
    """How much the demo edits: clips, frames per clip, DDIM steps, and the working size."""

    videos: int
    frames: int
    steps: int
    size: str


# The demo's scale per model, in one place (`make demo` should stay within a few minutes on a 2-core
# CPU: three runs of videos x 2 prompts x frames, plus the report; the toy world's 32x32 latents took
# 873 s at 4 videos x 16 frames x 25 steps, so one run is a third of that work; the three took about
# 6.2 minutes on a shared 2-core EPYC, 4.3 without the fusion run: BENCHMARKS.md). Flags override each value.
SCALES = {
    "toy": Scale(videos=2, frames=12, steps=20, size="128x128"),
    "tiny": Scale(videos=4, frames=4, steps=3, size="64x64"),
}
BASELINE_FLAGS = ["--injection", "none", "--no-latent-update"]  # the paper's per-frame editing
# The steadiest option beyond the paper (BENCHMARKS.md, consistency): fusion over the last 5 steps at 0.5.
# Opt-in, not the default: it misses some of the quality targets the paper's method meets.
FUSION_STEPS, FUSION_WEIGHT = 5, 0.5
EDITS, BASELINE, FUSION, STORE = "edits", "per-frame", "fusion", "precompute"  # folders under --output
LABELS = {EDITS: "Pix2Video (paper, default)", BASELINE: "per-frame", FUSION: "Pix2Video + fusion (opt-in)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    toy, tiny = SCALES["toy"], SCALES["tiny"]
    parser.add_argument(
        "--output", default="demo-output", metavar="DIR", help="folder for everything (default ./demo-output)"
    )
    parser.add_argument(
        "--videos",
        type=int,
        default=None,
        help=f"sample clips to generate (default {toy.videos} toy, {tiny.videos} tiny)",
    )
    parser.add_argument(
        "--frames", type=int, default=None, help=f"frames per clip (default {toy.frames} toy, {tiny.frames} tiny)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help=f"DDIM steps (default {toy.steps} toy, {tiny.steps} tiny)"
    )
    parser.add_argument(
        "--model",
        default="toy",
        help="toy (default: the toy world's trained models) or tiny (random models, noise-like pictures), both on "
        "held-out toy-world clips",
    )
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the per-frame baseline run (the report then shows no per-frame column)",
    )
    parser.add_argument(
        "--no-fusion",
        dest="fusion",
        action="store_false",
        help=f"skip the run with the fusion beyond the paper (--fusion-steps {FUSION_STEPS} --fusion-weight "
        f"{FUSION_WEIGHT:g}; the report then shows no fusion column)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def scale(args: argparse.Namespace) -> Scale:
    """The model's scale with the flags given; None = the default, an explicit 0 is refused."""
    base = SCALES[args.model]
    chosen = Scale(
        videos=base.videos if args.videos is None else args.videos,
        frames=base.frames if args.frames is None else args.frames,
        steps=base.steps if args.steps is None else args.steps,
        size=base.size,
    )
    for name in ("videos", "frames", "steps"):
        _common.check_positive(name, getattr(chosen, name))
    return chosen


def run_argv(args: argparse.Namespace, manifest: str, output: str, store: str, sc: Scale) -> list[str]:
    """Exactly what `pix2video run` would parse, so the demo exercises the real flags."""
    argv = [
        "--manifest",
        manifest,
        "--output",
        output,
        "--precompute-store",
        store,
        "--model",
        args.model,
        "--size",
        sc.size,
        "--steps",
        str(sc.steps),
        "--address",
        "local",
        "--num-editors",
        "1",
        "--metrics",
    ]
    if args.num_cpus:
        argv += ["--num-cpus", str(args.num_cpus)]
    if not args.progress:
        argv += ["--no-progress"]
    return argv


def fusion_flags(sc: Scale) -> list[str]:
    """The fusion run's flags: the last FUSION_STEPS steps (every step of a shorter schedule)."""
    return ["--fusion-steps", str(min(FUSION_STEPS, sc.steps)), "--fusion-weight", str(FUSION_WEIGHT)]


def run(args: argparse.Namespace) -> int:
    from jobs.cli import build_parser
    from pipeline.dataset.manifest import load_manifest
    from pipeline.dataset.storage import StorageOptions
    from pipeline.models.names import TINY, TOY
    from pipeline.report.page import write_report

    if args.model not in (TINY, TOY):
        raise InputError(f"--model {args.model!r}: the demo runs 'toy' or 'tiny'; use `pix2video run` for other models")
    started = time.perf_counter()
    toy = args.model == TOY
    sc = scale(args)
    folder = os.path.abspath(args.output)
    from toyworld import toy_model_dir
    from toyworld.dataset import write_toy_dataset

    if toy:
        toy_model_dir()  # a checkout without the committed toy models says so before any work
    # Held-out toy clips whichever the model: the tiny random models edit them too (noise-like pictures).
    manifest_path = write_toy_dataset(folder, sc.videos, sc.frames)
    out, base, fused, store = (os.path.join(folder, name) for name in (EDITS, BASELINE, FUSION, STORE))

    parser = build_parser("run")
    runs = [(LABELS[EDITS], parser.parse_args(run_argv(args, manifest_path, out, store, sc)))]
    if args.baseline:
        runs.append(
            (LABELS[BASELINE], parser.parse_args(run_argv(args, manifest_path, base, store, sc) + BASELINE_FLAGS))
        )
    if args.fusion:
        runs.append(
            (LABELS[FUSION], parser.parse_args(run_argv(args, manifest_path, fused, store, sc) + fusion_flags(sc)))
        )
    opts = StorageOptions()
    manifest = load_manifest(manifest_path, opts)
    seconds: dict[str, float] = {"dataset": time.perf_counter() - started}
    summaries = []
    session = _common.RaySession(runs[0][1])  # one local Ray instance for all runs
    try:
        for label, run_args in runs:
            t0 = time.perf_counter()
            print(f"\n== {label}: {run_args.output}")
            run_opts = _common.run_options(run_args, opts)
            run_opts.max_attempts = run_args.max_attempts
            summaries.append(_common.execute(run_args, manifest, run_opts, "demo", session=session)[0])
            seconds[label] = time.perf_counter() - t0
    finally:
        session.close()
    t0 = time.perf_counter()
    report = write_report(
        out,
        opts,
        baseline=base if args.baseline else None,
        baseline_label=LABELS[BASELINE],
        compared=[(LABELS[FUSION], fused)] if args.fusion else [],
        label=LABELS[EDITS],
        progress=args.progress,
    )
    seconds["report"] = time.perf_counter() - t0
    total = time.perf_counter() - started

    print()
    kind = "held-out toy-world clips" if toy else "generated clips"
    print(f"dataset:   {manifest_path}  ({sc.videos} {kind} x {sc.frames} frames, 2 prompts each)")
    print(f"videos:    {os.path.join(out, 'videos')}/  (Pix2Video as in the paper: one mp4 per video x prompt)")
    if args.baseline:
        print(f"baseline:  {os.path.join(base, 'videos')}/  (per-frame editing of the same clips and prompts)")
    if args.fusion:
        print(
            f"fusion:    {os.path.join(fused, 'videos')}/  "
            f"(Pix2Video + {' '.join(fusion_flags(sc))}: beyond the paper, opt-in)"
        )
    print(f"results:   {summaries[0].results}  (pandas.read_parquet / pyarrow / datasets)")
    print(f"precompute store: {store}/  (frames, depth, captions, flow, inversions; shared by the runs)")
    columns = ["input", *(["per-frame editing"] if args.baseline else []), "Pix2Video"]
    columns += ["Pix2Video + fusion"] if args.fusion else []
    shown = (
        f"{', '.join(columns[:-1])} and {columns[-1]} playing side by side" if len(columns) > 2 else "input and edit"
    )
    print(f"report:    {report}  (open in a browser: {shown}, metrics)")
    if toy:
        print("note: toy-world models (toyworld): small models we trained on a synthetic world, not SD2.")
    else:
        print("note: tiny random-weight models make noise-like pictures; they show the pipeline, not the method.")
    print(
        f"run it again: nothing is redone (resume); add --overwrite to `pix2video run --manifest "
        f"{manifest_path} --output {out} --precompute-store {store} --model {args.model} --size {sc.size} "
        f"--steps {sc.steps}` to redo everything."
    )
    parts = ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items())
    print(f"wall time: {total:.1f} s ({parts})")
    return 0 if all(s.failed == 0 for s in summaries) else 1


if __name__ == "__main__":
    _common.main_for("demo")
