"""Precompute only: decode, resize, depth and a caption per video; writes OUTPUT/labels.parquet.

    pix2video relabel --manifest s3://bucket/clips.parquet --output s3://bucket/labels/

One row per video: id, video, status, error, caption (BLIP, of the anchor frame), source_prompt (the
manifest's, if any), num_frames, fps, width/height (working size), src_width/src_height, and the URLs
of the stored frames and depth, plus the manifest's label columns. The precompute store it fills is
the one `pix2video run` reads, so a later run with the same --output starts editing at once.
"""

from __future__ import annotations

import argparse
import logging

import pyarrow as pa

from jobs import _common

log = logging.getLogger(__name__)

LABELS = "labels.parquet"

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("caption", pa.string()),
        ("source_prompt", pa.string()),
        ("num_frames", pa.int32()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("src_width", pa.int32()),
        ("src_height", pa.int32()),
        ("frames", pa.string()),
        ("depth", pa.string()),
        ("seconds_decode", pa.float64()),
        ("seconds_depth", pa.float64()),
        ("seconds_caption", pa.float64()),
    ]
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_io_arguments(parser, prompts=False)
    _common.add_model_arguments(parser)
    _common.add_cluster_arguments(parser, editors=False)
    _common.add_storage_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="recompute even what the store already holds")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="N",
        help="exit 0 when at most N videos failed (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    from actors import storage
    from actors.manifest import load_manifest
    from actors.results import write_table
    from actors.runner import precompute_dataset

    opts = _common.storage_options(args)
    run_opts = _common.run_options(args, opts)
    manifest = load_manifest(args.manifest, opts, require_prompts=False)
    started = _common.connect_ray(args)
    try:
        metas = precompute_dataset(manifest, run_opts, need_caption=True)
    finally:
        _common.shutdown_ray(started)

    rows, first_rows = [], []
    for job, meta in metas:
        ok = meta.get("status") == "ok"
        rows.append(
            {
                "id": job.id,
                "video": job.video,
                "status": "ok" if ok else "failed",
                "error": meta.get("error"),
                "caption": meta.get("caption"),
                "source_prompt": job.source_prompt,
                **{k: meta.get(k) for k in ("num_frames", "fps", "width", "height", "src_width", "src_height")},
                "frames": meta.get("frames") if ok else None,
                "depth": meta.get("depth") if ok else None,
                **{k: meta.get(k, 0.0) for k in ("seconds_decode", "seconds_depth", "seconds_caption")},
            }
        )
        first_rows.append(job.units[0].row)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    carried = manifest.carried_rows(first_rows)
    for name in carried.column_names:
        table = table.append_column(carried.schema.field(name), carried.column(name))
    url = storage.join(run_opts.output, LABELS)
    write_table(table, url, opts)
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"pix2video relabel: {len(rows) - failed} of {len(rows)} videos labelled, {failed} failed")
    print(f"labels: {url}")
    return 0 if failed <= args.max_failures else 1


if __name__ == "__main__":
    _common.main_for("relabel")
