"""--format and --shard-size for the verbs that write a training table (augment, relabel).

The parquet table is always written (reruns, `report` and the shards' own check read it); `--format
webdataset` adds tar shards of the clips and their rows under OUTPUT/shards/ (pipeline/dataset/shards.py).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.dataset.storage import StorageOptions

DEFAULT_SHARD_SIZE = 100  # samples per shard: a few hundred MB of 512x512 clips of a few seconds


def add_format_arguments(parser: argparse.ArgumentParser, table: str) -> None:
    from pipeline.dataset.shards import FORMATS

    g = parser.add_argument_group("output format")
    g.add_argument(
        "--format",
        default="parquet",
        choices=FORMATS,
        help=f"parquet (default): {table} only; webdataset: also tar shards OUTPUT/shards/NNNNNN.tar of "
        "<key>.mp4 + <key>.json (the row), each with its NNNNNN_stats.json, for video training pipelines",
    )
    g.add_argument(
        "--shard-size",
        type=int,
        default=None,
        metavar="N",
        help=f"samples per shard with --format webdataset (default {DEFAULT_SHARD_SIZE}); a rerun writes only "
        "the shards that are missing or whose samples changed",
    )


def check_format_arguments(args: argparse.Namespace) -> None:
    """Before any work: an unknown format (from a --config file) or a shard size below 1 is one line."""
    from pipeline.dataset.shards import check_format

    check_format(args.format, args.shard_size)


def shard_size(args: argparse.Namespace) -> int:
    return args.shard_size if args.shard_size is not None else DEFAULT_SHARD_SIZE


def write_shards(args: argparse.Namespace, samples: list, output: str, opts: StorageOptions, what: str) -> None:
    """The shards of `samples` (pipeline.dataset.shards.Sample) under OUTPUT/shards/, and one line saying so."""
    from pipeline.dataset.shards import write_shards as write

    w = write(samples, output, opts, shard_size=shard_size(args))
    print(f"shards: {w.folder}/ ({w.shards} of {w.samples} {what}: {w.written} written, {w.kept} kept)")
