"""Write a static HTML report of a finished run: OUTPUT/report/index.html (opens from disk, no server).

    pix2video report OUTPUT                      # metrics shown where `evaluate`/`--metrics` computed them
    pix2video report OUTPUT --metrics            # compute missing metrics first (as `pix2video evaluate`)

The page has a summary table of the run (clips by status, mean metrics of the edits and of the input
videos, seconds per stage), a table of every clip, and per clip the input and the edit side by side as
an animated GIF (plays in any browser or image viewer) with per-frame metric plots (PNG). Every link is
relative, so the folder can be copied or zipped as is. For an s3:// OUTPUT the report is written to
--report-dir if given, else built locally and uploaded to OUTPUT/report/.

Tiny models (--model tiny) give noise-like pictures, and metric values from the tiny CLIP
(--clip-model tiny) are meaningless: such a report only shows that the pipeline runs.
"""

from __future__ import annotations

import argparse

from jobs import _common, _metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="output folder or URL of a finished run/augment")
    parser.add_argument(
        "--report-dir",
        metavar="DIR",
        help="local folder for the report (default OUTPUT/report; for s3:// outputs: built here and uploaded)",
    )
    parser.add_argument(
        "--metrics", action="store_true", help="compute missing metrics first (as `pix2video evaluate`)"
    )
    _common.add_clip_arguments(parser, device=True)
    g = parser.add_argument_group("previews")
    g.add_argument("--preview-height", type=int, default=192, metavar="PX", help="height of the previews (default 192)")
    g.add_argument(
        "--preview-frames", type=int, default=48, metavar="N", help="frames per preview, from the start (default 48)"
    )
    g.add_argument(
        "--max-clips",
        type=int,
        default=200,
        metavar="N",
        help="clips shown in detail (default 200; all are in the table)",
    )
    _common.add_cluster_arguments(parser, editors=False, precompute=False)
    _common.add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.dataset import storage
    from pipeline.dataset.report import write_report

    for name in ("preview_height", "preview_frames", "max_clips"):
        _common.check_positive(name.replace("_", "-"), getattr(args, name))
    opts = _common.storage_options(args)
    if args.metrics:
        _metrics.evaluate(args, opts, "report")
    page = write_report(
        args.output,
        opts,
        args.report_dir,
        preview_height=args.preview_height,
        preview_frames=args.preview_frames,
        max_clips=args.max_clips,
        progress=args.progress,
    )
    local = storage.is_local(page)
    print(f"report: {page}" + (" (open it in a browser; no server needed)" if local else ""))
    return 0


if __name__ == "__main__":
    _common.main_for("report")
