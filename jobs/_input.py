"""One video from the command line, ready to edit: shared by `edit` and `ablate` (no Ray)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from jobs import _common
from pipeline.errors import InputError


@dataclass
class PreparedInput:
    """A video read, resized and given depth and a source prompt: what the editor needs."""

    frames: np.ndarray  # uint8 [N,H,W,3] at the edit size
    depth: list[np.ndarray] | None  # None until estimated
    source_prompt: str | None  # None until captioned
    fps: float
    names: list[str]


def read_input(args: argparse.Namespace) -> PreparedInput:
    """The cheap, checkable part first: frames, edit size, given depth maps and prompts."""
    from pipeline.io.depth import load_depth_folder
    from pipeline.io.frames import resize_frames
    from pipeline.io.video import read_frames

    if args.source_prompt is not None and not args.source_prompt.strip():
        raise InputError("--source-prompt is empty: describe the input video, or leave the flag out to caption it")
    sizes = _common.model_sizes(args.model)  # the size multiple and working size, from config files only
    size = sizes.parse_size(args.size) if args.size else None
    clip = read_frames(args.input, max_frames=args.max_frames)
    frames = resize_frames(clip.frames, *(size or sizes.default_size(clip.frames.shape[2], clip.frames.shape[1])))
    depth = load_depth_folder(args.depth, clip.names) if args.depth else None
    return PreparedInput(frames, depth, args.source_prompt, clip.fps, clip.names)


def complete_input(data: PreparedInput, args: argparse.Namespace, *, device, dtype: str) -> None:
    """Estimate depth and caption the anchor frame where the user gave neither."""
    if data.depth is None:
        from pipeline.models.depth import DepthEstimator

        data.depth = list(DepthEstimator.from_model(args.model, dtype=dtype, device=device)(data.frames))
    if data.source_prompt is None:
        from pipeline.models.caption import Captioner

        anchor = data.frames[-1] if args.reverse else data.frames[0]
        captioner = Captioner.from_model(_common.caption_model(args), dtype=dtype, device=device)
        data.source_prompt = captioner([anchor])[0]
        print(f"source prompt (caption of the anchor frame): {data.source_prompt}")
