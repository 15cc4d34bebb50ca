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

from jobs import _common, _metrics
from jobs._flags import add_options
from pipeline.dataset.manifest import load_manifest
from pipeline.stages.options import RunOptions

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_io_arguments(parser)
    _common.add_model_arguments(parser)
    _common.add_edit_arguments(parser)
    _common.add_shots_argument(parser)
    _common.add_cluster_arguments(parser)
    _common.add_storage_arguments(parser)
    _metrics.add_metrics_arguments(parser)
    g = parser.add_argument_group("resume and faults")
    g.add_argument("--overwrite", action="store_true", help="redo everything, even what is done")
    g.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="N",
        help="exit 0 when at most N videos x prompts failed (default 0)",
    )
    add_options(g, RunOptions, only=("max_attempts",))


def run(args: argparse.Namespace) -> int:
    opts = _common.storage_options(args)
    run_opts = _common.run_options(args, opts)  # --max-attempts included
    _common.check_positive("max-attempts", args.max_attempts)
    _common.check_positive("max-failures", args.max_failures, allow_zero=True)
    manifest = load_manifest(args.manifest, opts, prompts=args.prompt, output=args.output)
    # --metrics: the editors score each clip as they write it (columns clip_text, clip_image, pixel_mse).
    summary, _ = _common.execute(args, manifest, run_opts, "run")
    return 0 if summary.failed <= args.max_failures else 1


if __name__ == "__main__":
    _common.main_for("run")
