"""Precompute only: decode, resize, depth and a caption per video; writes OUTPUT/labels.parquet.

    pix2video relabel --manifest s3://bucket/clips.parquet --output s3://bucket/labels/

One row per video: id, video, status, error, caption (BLIP, of the anchor frame), source_prompt (the
manifest's, if any), num_frames, fps, width/height (working size), src_width/src_height, and the URLs
of the stored frames and depth, plus the manifest's label columns. The precompute store it fills is
the one `pix2video run` reads, so a later run with the same --output starts editing at once.

`--format webdataset` also writes tar shards OUTPUT/shards/NNNNNN.tar (`--shard-size N` videos each):
per labelled video its source clip as given (`<key>.mp4`, or the clip's own extension) and
`<key>.json` (its labels.parquet row).
"""

from __future__ import annotations

import argparse
import logging

from jobs import _common, _format, _session
from pipeline.dataset import shards, storage
from pipeline.dataset.datasets import labels_table
from pipeline.dataset.manifest import load_manifest
from pipeline.dataset.tables import LABELS, write_table

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_io_arguments(parser, prompts=False)
    _common.add_model_arguments(parser)
    _common.add_cluster_arguments(parser, editors=False)
    _common.add_storage_arguments(parser)
    _format.add_format_arguments(parser, LABELS)
    parser.add_argument("--overwrite", action="store_true", help="recompute even what the store already holds")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="N",
        help="exit 0 when at most N videos failed (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    from actors.runner import precompute_dataset  # Ray: not imported before the flags are parsed

    _format.check_format_arguments(args)
    opts = _common.storage_options(args)
    run_opts = _common.run_options(args, opts)
    manifest = load_manifest(args.manifest, opts, require_prompts=False, tables=(LABELS,), output=args.output)
    started = _session.connect_ray(args)
    try:
        metas = precompute_dataset(manifest, run_opts, need_caption=True)
    finally:
        _session.shutdown_ray(started)
    table = labels_table(manifest, metas)
    url = storage.join(run_opts.output, LABELS)
    write_table(table, url, opts)
    failed = table.column("status").to_pylist().count("failed")
    print(f"pix2video relabel: {table.num_rows - failed} of {table.num_rows} videos labelled, {failed} failed")
    print(f"labels: {url}")
    if args.format == "webdataset":
        samples = shards.labels_samples(table, [job for job, _ in metas], opts)
        _format.write_shards(args, samples, run_opts.output, opts, "videos")
    return 0 if failed <= args.max_failures else 1


if __name__ == "__main__":
    _common.main_for("relabel")
