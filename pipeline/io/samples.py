"""Generated sample videos: coloured shapes moving over a gradient, deterministic per seed.

Used as test data, demo inputs and benchmark inputs, so nothing has to be downloaded. The motion is
smooth (a few pixels per frame, bouncing off the edges) so temporal consistency is visible, and the
same ``(num_frames, width, height, seed)`` always gives the same pixels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.io.video import write_frames_folder, write_video

NUM_SHAPES = 4


def _bounce(start: float, velocity: float, t: int, span: float) -> float:
    # Position moving at constant speed inside [0, span], reflecting off both ends.
    if span <= 0:
        return 0.0
    p = (start + velocity * t) % (2 * span)
    return p if p <= span else 2 * span - p


def iter_moving_shapes(
    num_frames: int = 8, width: int = 64, height: int = 64, seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield the frames of :func:`moving_shapes` one at a time (for long benchmark videos)."""
    if num_frames < 1 or width < 1 or height < 1:
        raise ValueError(f"moving_shapes: need positive sizes, got {num_frames} frames of {width}x{height}")
    rng = np.random.default_rng(seed)
    # Background: a diagonal blend of two random colours, fixed over time (a static "scene").
    corner_a, corner_b = rng.uniform(30, 225, size=(2, 3))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    mix = (xx / max(width - 1, 1) + yy / max(height - 1, 1))[..., None] / 2
    background = (corner_a * (1 - mix) + corner_b * mix).astype(np.float32)

    short = min(width, height)
    shapes = []
    for i in range(NUM_SHAPES):
        size = rng.uniform(0.12, 0.25) * short  # radius, or half the side of a rectangle
        shapes.append(
            {
                "circle": i % 2 == 0,
                "size": size,
                "aspect": rng.uniform(0.6, 1.6),
                "color": rng.uniform(0, 255, size=3),
                "start": rng.uniform(0, 1, size=2) * (width, height),
                # A few pixels per frame at 512 px; direction random.
                "velocity": rng.uniform(0.01, 0.04, size=2) * short * rng.choice([-1, 1], size=2),
            }
        )

    for t in range(num_frames):
        frame = background.copy()
        for s in shapes:
            cx = _bounce(s["start"][0], s["velocity"][0], t, width)
            cy = _bounce(s["start"][1], s["velocity"][1], t, height)
            if s["circle"]:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= s["size"] ** 2
            else:
                half_w, half_h = s["size"] * s["aspect"], s["size"] / s["aspect"]
                mask = (np.abs(xx - cx) <= half_w) & (np.abs(yy - cy) <= half_h)
            frame[mask] = s["color"]
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def moving_shapes(num_frames: int = 8, width: int = 64, height: int = 64, seed: int = 0) -> np.ndarray:
    """Frames uint8 ``[num_frames, height, width, 3]`` of shapes moving over a gradient."""
    return np.stack(list(iter_moving_shapes(num_frames, width, height, seed)))


def write_sample_video(
    path: str | os.PathLike,
    num_frames: int = 8,
    width: int = 64,
    height: int = 64,
    fps: float = 8.0,
    seed: int = 0,
) -> Path:
    """Write :func:`moving_shapes` as an H.264 mp4 and return the path.

    Frames are generated while encoding, so long benchmark videos never sit in memory.
    """
    return write_video(path, iter_moving_shapes(num_frames, width, height, seed), fps)


def write_sample_frames(
    folder: str | os.PathLike, num_frames: int = 8, width: int = 64, height: int = 64, seed: int = 0
) -> Path:
    """Write :func:`moving_shapes` as ``000000.png``, ``000001.png``, ... and return the folder."""
    names = [f"{i:06d}" for i in range(num_frames)]
    return write_frames_folder(folder, iter_moving_shapes(num_frames, width, height, seed), names)
