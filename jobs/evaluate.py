"""Score a finished run with the paper's metrics; adds columns to OUTPUT/results.parquet.

    pix2video evaluate OUTPUT                       # OUTPUT of `pix2video run` / `augment` (local or s3://)
    pix2video evaluate OUTPUT --clip-model tiny     # offline test: tiny random CLIP, meaningless values

For every clip with status ok (or filtered): CLIP-Text (output frames vs. the target prompt, higher is
better), CLIP-Image (consecutive output frames, higher is better) and Pixel-MSE (output frame t warped to
t+1 with the INPUT video's optical flow, 0-255 scale, lower is better); see pipeline/quality/metrics.py. The
same three on the input video are the baseline (columns input_clip_text, input_clip_image, input_pixel_mse).

Per-frame values go to OUTPUT/metrics/<clip>.json (also what `pix2video report` plots); a rerun
reuses them unless the output file or the CLIP model changed (--overwrite recomputes everything).
The clips left to score are scored on Ray by a pool of metric actors (CLIP loaded once per actor);
the work is actors/evaluation.py. Metric values from the tiny CLIP (--clip-model tiny) are
meaningless except as a test.
"""

from __future__ import annotations

import argparse

from jobs import _common, _metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="output folder or URL of a finished run/augment")
    _common.add_clip_arguments(parser, device=True)
    parser.add_argument(
        "--overwrite", action="store_true", help="recompute every clip, even those with up-to-date metrics"
    )
    _common.add_cluster_arguments(parser, editors=False, precompute=False)
    _common.add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    _metrics.evaluate(args, _common.storage_options(args), "evaluate", overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    _common.main_for("evaluate")
