"""Edit every video of a dataset with every prompt, on a Ray cluster (or a local Ray instance).

    pix2video run --manifest s3://bucket/clips.parquet --output s3://bucket/edits/ --model tiny

Writes OUTPUT/videos/<id>__<prompt>-<hash>.mp4 per (video, prompt), OUTPUT/results.parquet (one row per
(video, prompt): status, error, output, sizes, seconds per stage, the manifest's label columns) and
OUTPUT/precompute/ (frames, depth, captions, inversions; reused by reruns). A rerun skips what is done;
--overwrite redoes everything. Exits 1 when more videos x prompts failed than --max-failures allows.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from jobs import _common, evaluate

if TYPE_CHECKING:
    from actors.manifest import Manifest
    from actors.runner import RunOptions, RunSummary

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_io_arguments(parser)
    _common.add_model_arguments(parser)
    _common.add_edit_arguments(parser)
    _common.add_cluster_arguments(parser)
    _common.add_storage_arguments(parser)
    evaluate.add_metrics_arguments(parser)
    g = parser.add_argument_group("resume and faults")
    g.add_argument("--overwrite", action="store_true", help="redo everything, even what is done")
    g.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="N",
        help="exit 0 when at most N videos x prompts failed (default 0)",
    )
    g.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="times a video is retried after its editor process died (default 3)",
    )


def run(args: argparse.Namespace) -> int:
    from actors.manifest import load_manifest

    opts = _common.storage_options(args)
    run_opts = _common.run_options(args, opts)
    _common.check_positive("max-attempts", args.max_attempts)
    _common.check_positive("max-failures", args.max_failures, allow_zero=True)
    run_opts.max_attempts = args.max_attempts
    manifest = load_manifest(args.manifest, opts, prompts=args.prompt)
    summary = execute(args, manifest, run_opts)
    print_summary("run", summary)
    evaluate.after_run(args, opts, "run")  # --metrics: columns clip_text, clip_image, pixel_mse
    return 0 if summary.failed <= args.max_failures else 1


def execute(args: argparse.Namespace, manifest: Manifest, run_opts: RunOptions) -> RunSummary:
    """Run the dataset, connecting to Ray only when there is work; disconnect if we started Ray."""
    from actors.runner import run_dataset

    started = False

    def connect() -> None:
        nonlocal started
        started = _common.connect_ray(args)

    try:
        return run_dataset(manifest, run_opts, connect=connect)
    finally:
        _common.shutdown_ray(started)


def print_summary(verb: str, summary: RunSummary) -> None:
    idle = "" if summary.editor_idle_share is None else f", editors idle {summary.editor_idle_share:.1%} once warm"
    print(
        f"pix2video {verb}: {summary.ok} of {summary.total} videos x prompts ok, {summary.failed} failed "
        f"({summary.skipped} done before this run) in {summary.seconds:.1f} s, "
        f"{summary.frames_per_second:.2f} frames/s{idle}"
    )
    print(f"results: {summary.results}")
    if summary.failed:
        print("failed rows have status 'failed' and the reason in 'error'; rerun the same command to retry them")


if __name__ == "__main__":
    _common.main_for("run")
