"""Write a static HTML report of a finished run: OUTPUT/report/index.html (opens from disk, no server).

    pix2video report OUTPUT                      # metrics shown where `evaluate`/`--metrics` computed them
    pix2video report OUTPUT --metrics            # compute missing metrics first (as `pix2video evaluate`)
    pix2video report edits/ --baseline per-frame/ --baseline-label per-frame   # two runs side by side
    pix2video report edits/ --baseline per-frame/ --compare "+ fusion=fusion/"  # and a third after this one

The page has a summary table of the run (clips by status, mean metrics of the edits and of the input
videos, seconds per stage), a table of every clip, and per clip the input and the edit side by side as
an animated GIF (plays in any browser or image viewer) with per-frame metric plots (PNG). Every link is
relative, so the folder can be copied or zipped as is. For an s3:// OUTPUT the report is written to
--report-dir if given, else built locally and uploaded to OUTPUT/report/.

With --baseline DIR (another run of the same manifest, matched by id and prompt), each clip and prompt
both runs edited shows instead one animated image (lossless WebP) of input | baseline | this run
playing in step, a frame strip and both runs' Pixel-MSE, and the top of the page both runs' mean
Pixel-MSE. --compare [LABEL=]DIR (repeatable) adds further runs of the same manifest after this one:
input | baseline | this run | compared runs, each with its metrics (Pixel-MSE, CLIP-Text, CLIP-Image)
per clip and their means over the clips every run scored at the top. A baseline or compared run that
is not a run, is this run or one given before, shares no clip and prompt with it, or whose label
another run has is refused in one line before anything is written; --metrics scores every run.

Tiny models (--model tiny) give noise-like pictures, and metric values from the tiny CLIP
(--clip-model tiny) are meaningless: such a report only shows that the pipeline runs.
"""

from __future__ import annotations

import argparse

from jobs import _common, _metrics
from pipeline.errors import InputError
from pipeline.report.compare import DEFAULT_LABEL, STRIP_COLUMNS  # light: no pyarrow, Pillow or torch


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
    b = parser.add_argument_group("other runs side by side")
    b.add_argument(
        "--baseline",
        metavar="DIR",
        help="another run of the same manifest (say per-frame editing): shown beside this one, clip by clip",
    )
    b.add_argument(
        "--baseline-label", metavar="TEXT", help="the baseline's name on the page (default: its folder's name)"
    )
    b.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="[LABEL=]DIR",
        help="another run of the same manifest shown after this one (say an option beyond the paper), under "
        "LABEL (default: its folder's name); repeatable, in order",
    )
    b.add_argument(
        "--label", default=DEFAULT_LABEL, metavar="TEXT", help=f"this run's name on the page (default {DEFAULT_LABEL})"
    )
    b.add_argument(
        "--strip-frames",
        type=int,
        default=STRIP_COLUMNS,
        metavar="N",
        help=f"columns of the frame strips: every k-th frame, k the smallest that fits (default {STRIP_COLUMNS})",
    )
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


def compared_run(text: str) -> tuple[str | None, str]:
    """`--compare LABEL=DIR` or `--compare DIR` as (label or None, DIR). Only text before the first '='
    without a '/' is a label, so a folder or URL with '=' in it can be given as it is."""
    name, sep, where = text.partition("=")
    if not sep or "/" in name:
        return None, text
    if not name.strip() or not where.strip():
        raise InputError(f"--compare {text!r}: give LABEL=DIR (both non-empty) or DIR")
    return name, where


def run(args: argparse.Namespace) -> int:
    from pipeline.dataset import storage
    from pipeline.report.page import check_columns, write_report

    for name in ("preview_height", "preview_frames", "max_clips", "strip_frames"):
        _common.check_positive(name.replace("_", "-"), getattr(args, name))
    for flag, value in (("--label", args.label), ("--baseline-label", args.baseline_label)):
        if value is not None and not value.strip():
            raise InputError(f"{flag} {value!r}: empty; give the name the page shows for that run")
    compared = [compared_run(text) for text in args.compare]
    opts = _common.storage_options(args)
    others = ([args.baseline] if args.baseline is not None else []) + [where for _, where in compared]
    if others:  # refused before --metrics writes anything
        check_columns(
            args.output,
            opts,
            baseline=args.baseline,
            baseline_label=args.baseline_label,
            compared=compared,
            label=args.label,
        )
    if args.metrics:
        _metrics.evaluate(args, opts, "report")
        for where in others:
            _metrics.evaluate(argparse.Namespace(**{**vars(args), "output": where}), opts, "report")
    page = write_report(
        args.output,
        opts,
        args.report_dir,
        baseline=args.baseline,
        baseline_label=args.baseline_label,
        compared=compared,
        label=args.label,
        strip_frames=args.strip_frames,
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
