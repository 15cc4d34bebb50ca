"""The whole pipeline on a generated sample dataset, on a local Ray instance, with tiny models.

    pix2video demo                      # writes ./demo-output/

Generates a few 64x64 moving-shapes clips and a manifest (JSON lines: video, prompts, a label), runs
`pix2video run` on them with the tiny random-weight models and a few DDIM steps, and prints where the
results are. It needs no download and no GPU, and takes about a minute on a laptop. Tiny models give
noise-like pictures: the demo shows the machinery (manifest in, Ray precompute and editor actors,
mp4s, results table, resume), not the quality of the edits. For real edits use the default model:

    pix2video run --manifest demo-output/manifest.jsonl --output edits/ --size 512x512
"""

from __future__ import annotations

import argparse
import json
import os

from jobs import _common

PROMPTS = ["a watercolor painting of shapes", "{caption}, neon lights"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default="demo-output", metavar="DIR", help="folder for everything (default ./demo-output)"
    )
    parser.add_argument("--videos", type=int, default=4, help="sample clips to generate (default 4)")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (default 4)")
    parser.add_argument("--steps", type=int, default=3, help="DDIM steps (default 3)")
    parser.add_argument("--model", default="tiny", help="diffusion model (default tiny; see pix2video run --help)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def write_dataset(folder: str, videos: int, frames: int) -> str:
    """Sample clips under `folder`/data/ and `folder`/manifest.jsonl (paths relative to it)."""
    from pipeline.io.samples import write_sample_video

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
    from actors.manifest import load_manifest
    from actors.report import write_report
    from actors.storage import StorageOptions
    from jobs.cli import build_parser

    _common.check_positive("videos", args.videos)
    _common.check_positive("frames", args.frames)
    folder = os.path.abspath(args.output)
    manifest_path = write_dataset(folder, args.videos, args.frames)
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
        "64x64",
        "--steps",
        str(args.steps),
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
    print(f"dataset:   {manifest_path}  ({args.videos} generated clips, {len(PROMPTS)} prompts each)")
    print(f"videos:    {os.path.join(out, 'videos')}/  (one mp4 per video x prompt)")
    print(f"results:   {summary.results}  (pandas.read_parquet / pyarrow / datasets)")
    print(f"precompute store: {os.path.join(out, 'precompute')}/  (frames, depth, captions, inversions)")
    print(f"report:    {report}  (open in a browser: input and edit side by side, metrics)")
    if args.model == "tiny":
        print("note: tiny random-weight models make noise-like pictures; they show the pipeline, not the method.")
    print(
        f"run it again: nothing is redone (resume); add --overwrite to `pix2video run --manifest "
        f"{manifest_path} --output {out} --model {args.model} --size 64x64` to redo everything."
    )
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    _common.main_for("demo")
