"""Edit one video with a text prompt (Pix2Video), on one machine, without Ray.

    pix2video edit clip.mp4 -o edited.mp4 --prompt "a car made of lego"
    pix2video edit frames/ -o edited/ --prompt "..." --depth depth/ --source-prompt "a car"

INPUT is a video file (mp4, mov, mkv, webm, gif, ...) or a folder of frames sorted by name. OUTPUT
with a video extension is an H.264 mp4 at the input's fps; otherwise a folder of lossless PNGs named
like the input frames (000000.png, ... for a video input). Without --source-prompt the anchor frame
is captioned and the caption printed. With --model tiny (random weights, no download) the pictures
are noise-like: that model exists for tests, demos and benchmarks.

Shot cuts (--shots auto, the default) split the clip into shots, each edited as a video of its own
(its own anchor, inversion and caption); --mask keeps everything outside the mask as the input.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from tqdm import tqdm

from jobs import _common, _metrics
from jobs._input import complete_input, read_input
from pipeline.dataset.manifest import check_text
from pipeline.errors import Failure, InputError, first_line
from pipeline.io.formats import WRITABLE_VIDEO_EXTENSIONS
from pipeline.io.shots import check_shots, detect_shots, parse_shots_flag

# Video files (PyAV) and the edit stage (diffusers) are imported where they are used: `pix2video edit
# --help` and a usage error do not wait for them.

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="video file or folder of frames")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="output .mp4, or a folder for PNGs")
    parser.add_argument("--prompt", required=True, metavar="TEXT", help="target prompt: what the video should become")
    parser.add_argument(
        "--source-prompt", metavar="TEXT", help="what the input shows (default: a caption of the anchor frame)"
    )
    parser.add_argument(
        "--depth",
        metavar="DIR",
        help="folder with one <frame stem>.npy raw depth map per frame (any resolution, larger = nearer); "
        "the depth model is then not run",
    )
    parser.add_argument(
        "--shots",
        default="auto",
        metavar="auto|off|0,48",
        help="shot cuts: auto = detect them (PySceneDetect), each shot edited as a video of its own; off = "
        "one shot; or the first frame of every shot (default auto)",
    )
    parser.add_argument(
        "--mask",
        metavar="MASK",
        help="local edit: a folder of mask images (one per frame, sorted by name) or a mask video, local or "
        "any fsspec URL, at the input's size; white = edit, black = keep the input",
    )
    _common.add_model_arguments(parser)
    _common.add_edit_arguments(parser)
    _metrics.add_metrics_arguments(parser, metrics_help=_metrics.EDIT_METRICS_HELP)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise InputError("--prompt is empty: say what the video should become")
    check_text(args.prompt, "--prompt")  # argv bytes that are not UTF-8: one line, not the tokenizer's traceback
    if args.source_prompt:
        check_text(args.source_prompt, "--source-prompt")
    paths = (("input", args.input), ("--output", args.output), ("--depth", args.depth), ("--mask", args.mask))
    for flag, path in paths:
        if path and "://" not in path and os.path.islink(path) and not os.path.exists(path):
            raise InputError(f"{flag} {path}: is a link that leads nowhere (or to itself); give the file itself")
    config = _common.edit_config(args)
    # Every value and the output location before the video is read or a model loaded: a bad
    # output must not cost the whole edit, and must never overwrite the input or the user's files.
    _common.check_positive("max-frames", args.max_frames)
    _common.parse_size(args.size, args.model)
    shots = parse_shots_flag(args.shots)
    from pipeline.io.masks import read_mask  # torch and PyAV: after the flags are checked
    from pipeline.io.video import check_frames_folder, check_output, write_output
    from pipeline.stages.edit import EditStage

    check_output(args.output, inputs=[p for p in (args.input, args.depth, args.mask) if p])
    started = time.perf_counter()
    data = read_input(args)
    n = len(data.frames)
    height, width = data.frames.shape[1:3]
    mask = None
    if args.mask:  # checked against the clip before any model loads
        mask = read_mask(args.mask, num_frames=n, size=data.src_size, working_size=(width, height))
    if shots == "auto":
        data.shots = detect_shots(data.frames)
    elif shots != "off":
        data.shots = check_shots(shots, n, "--shots")
    if len(data.shots) > 1:
        print(f"shots: {len(data.shots)}, first frames {data.shots} (each edited as a video of its own)")
    if Path(args.output).suffix.lower() not in WRITABLE_VIDEO_EXTENSIONS:
        check_frames_folder(args.output, data.names)  # an earlier edit of these frames, or nothing
    # Then the models: a wrong --model fails before minutes of depth estimation.
    stage = EditStage(args.model, device=args.device, dtype=args.dtype, speed=_common.speed_options(args))
    scorer = _metrics.scorer_for(args, stage.models.device)  # --metrics: CLIP loaded before the long work
    complete_input(data, args, device=stage.models.device, dtype=args.dtype)
    log.info("editing %d frames at %dx%d on %s (%s)", n, width, height, stage.models.device, stage.models.dtype)

    # The per-video path every entry point takes (pipeline/stages/edit.py): prepare, edit, decode.
    clip = stage.prepare(data.frames, data.depth, data.shots, data.source_prompts, config, mask=mask)
    progress = _progress(n, enabled=args.progress)
    ((latents,),) = stage.edit([(clip, [[args.prompt] * len(data.shots)])], config, lambda *_: progress.update())
    progress.close()
    try:
        out = write_output(args.output, stage.decode(clip, latents, config), data.fps, data.names)
    except OSError as e:  # disk full, a file size limit: written under a temporary name, so nothing was replaced
        raise Failure(
            f"{args.output}: could not be written ({e.strerror or first_line(e, 120)}); "
            "an earlier output there is unchanged"
        ) from None
    elapsed = time.perf_counter() - started
    print(f"wrote {out} ({n} frames, {width}x{height}, {elapsed:.1f} s)")
    if scorer is not None:
        _metrics.print_edit_metrics(str(out), data.frames, args.prompt, scorer)
    return 0


def _progress(total: int, *, enabled: bool) -> tqdm:
    return tqdm(total=total, unit="frame", desc="editing", disable=not enabled)


if __name__ == "__main__":
    _common.main_for("edit")
