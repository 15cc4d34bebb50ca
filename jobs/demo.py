"""The whole pipeline on a generated dataset, on a local Ray instance, with the toy world's models.

    pix2video demo                      # writes ./demo-output/ (toy world, a few minutes on a laptop CPU)
    pix2video demo --model tiny         # moving shapes and tiny random models: the machinery in seconds

With the default `--model toy`, renders held-out clips of the toy world (objects the toy models never
saw), writes them with a manifest (JSON lines: video, two target prompts that change one object's
colour and texture, labels), runs `pix2video run` with the toy models committed in toyworld/model/
(our own small SD2-depth, DPT, BLIP and CLIP, trained on that world) and writes the HTML report: the
edits are recognisable and the metrics mean something within the toy world. It is not SD2's quality.
With `--model tiny` the clips are 64x64 moving shapes and the pictures are noise-like: that shows the
machinery (manifest, Ray precompute and editor actors, mp4s, results, resume), not the method. For real
edits use the published model:

    pix2video run --manifest demo-output/manifest.jsonl --output edits/ --model stabilityai/stable-diffusion-2-depth
"""

from __future__ import annotations

import argparse
import json
import os

from jobs import _common
from pipeline.errors import InputError

PROMPTS = ["a watercolor painting of shapes", "{caption}, neon lights"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default="demo-output", metavar="DIR", help="folder for everything (default ./demo-output)"
    )
    parser.add_argument("--videos", type=int, default=4, help="sample clips to generate (default 4)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default 16 toy, 4 tiny)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 25 toy, 3 tiny)")
    parser.add_argument(
        "--model",
        default="toy",
        help="toy (default: the toy world's trained models and clips) or tiny (random models, moving shapes)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def write_dataset(folder: str, videos: int, frames: int) -> str:
    """Sample clips under `folder`/data/ and `folder`/manifest.jsonl (paths relative to it)."""
    from fixtures.clips import write_sample_video

    data = os.path.join(folder, "data")
    os.makedirs(data, exist_ok=True)
    lines = []
    for i in range(videos):
        name = f"shapes-{i:02d}.mp4"
        path = os.path.join(data, name)
        if not os.path.exists(path):
            write_sample_video(path, num_frames=frames, width=64, height=64, fps=8.0, seed=i)
        lines.append({"video": f"data/{name}", "prompt": PROMPTS, "scene": f"shapes-{i % 2}", "label": i % 2})
    manifest = os.path.join(folder, "manifest.jsonl")
    with open(manifest, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return manifest


def run(args: argparse.Namespace) -> int:
    from jobs.cli import build_parser
    from pipeline.dataset.manifest import load_manifest
    from pipeline.dataset.report import write_report
    from pipeline.dataset.storage import StorageOptions
    from pipeline.models.loading import TINY, TOY

    if args.model not in (TINY, TOY):
        raise InputError(f"--model {args.model!r}: the demo runs 'toy' or 'tiny'; use `pix2video run` for other models")
    toy = args.model == TOY
    # None = the world's default; an explicit 0 must reach check_positive, not become the default
    frames = args.frames if args.frames is not None else (16 if toy else 4)
    steps = args.steps if args.steps is not None else (25 if toy else 3)
    size = "128x128" if toy else "64x64"
    _common.check_positive("videos", args.videos)
    _common.check_positive("frames", frames)
    _common.check_positive("steps", steps)
    folder = os.path.abspath(args.output)
    if toy:
        from toyworld import toy_model_dir
        from toyworld.dataset import write_toy_dataset

        toy_model_dir()  # a checkout without the committed toy models says so before any work
        manifest_path = write_toy_dataset(folder, args.videos, frames)
    else:
        manifest_path = write_dataset(folder, args.videos, frames)
    out = os.path.join(folder, "edits")

    # Exactly what `pix2video run` would parse, so the demo exercises the real flags.
    argv = [
        "--manifest",
        manifest_path,
        "--output",
        out,
        "--model",
        args.model,
        "--size",
        size,
        "--steps",
        str(steps),
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
    run_args = build_parser("run").parse_args(argv)
    opts = StorageOptions()
    run_opts = _common.run_options(run_args, opts)
    run_opts.max_attempts = run_args.max_attempts
    manifest = load_manifest(manifest_path, opts)
    summary, _ = _common.execute(run_args, manifest, run_opts, "demo")
    report = write_report(out, opts, progress=args.progress)
    print()
    kind = "held-out toy-world clips" if toy else "generated clips"
    print(f"dataset:   {manifest_path}  ({args.videos} {kind}, 2 prompts each)")
    print(f"videos:    {os.path.join(out, 'videos')}/  (one mp4 per video x prompt)")
    print(f"results:   {summary.results}  (pandas.read_parquet / pyarrow / datasets)")
    print(f"precompute store: {os.path.join(out, 'precompute')}/  (frames, depth, captions, inversions)")
    print(f"report:    {report}  (open in a browser: input and edit side by side, metrics)")
    if toy:
        print("note: toy-world models (toyworld): small models we trained on a synthetic world, not SD2.")
    else:
        print("note: tiny random-weight models make noise-like pictures; they show the pipeline, not the method.")
    print(
        f"run it again: nothing is redone (resume); add --overwrite to `pix2video run --manifest "
        f"{manifest_path} --output {out} --model {args.model} --size {size}` to redo everything."
    )
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    _common.main_for("demo")
