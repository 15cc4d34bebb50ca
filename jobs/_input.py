"""One video from the command line, ready to edit: shared by `edit` and `ablate` (no Ray)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

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
    src_size: tuple[int, int] = (0, 0)  # the clip's own (width, height), before the resize
    shots: list[int] = field(default_factory=lambda: [0])  # first frame of each shot (pipeline.io.shots)
    source_prompts: list[str] | None = None  # one per shot; None until captioned (or given)


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
    src_size = (clip.frames.shape[2], clip.frames.shape[1])
    return PreparedInput(frames, depth, args.source_prompt, clip.fps, clip.names, src_size)


def complete_input(data: PreparedInput, args: argparse.Namespace, *, device, dtype: str) -> None:
    """Estimate depth and caption the anchor frame of every shot where the user gave neither, as the
    precompute stage does for a dataset."""
    from pipeline.io.shots import shot_ranges
    from pipeline.stages.precompute import caption_shots, captioner, depth_estimator

    if data.depth is None:
        data.depth = list(depth_estimator(args.model, device, dtype)(data.frames))
    if data.source_prompt is None:
        model = captioner(_common.caption_model(args), device, dtype)
        data.source_prompts = caption_shots(model, data.frames, data.shots, args.reverse)
        data.source_prompt = data.source_prompts[0]
        ranges = shot_ranges(data.shots, len(data.frames))
        if len(ranges) == 1:
            print(f"source prompt (caption of the anchor frame): {data.source_prompt}")
        for (start, stop), caption in zip(ranges if len(ranges) > 1 else [], data.source_prompts, strict=False):
            print(f"source prompt of frames {start}-{stop - 1} (caption of their anchor frame): {caption}")
    elif data.source_prompts is None:
        data.source_prompts = [data.source_prompt] * len(data.shots)
