"""Optical flow (OpenCV Farnebäck), backward warping and the forward-backward consistency mask, for
the paper's Pixel-MSE metric (see pipeline.quality.metrics)."""

from __future__ import annotations

import numpy as np

from pipeline.errors import InputError
from pipeline.io.frames import resize_frames

# Forward-backward consistency check (Sundaram et al. 2010; the thresholds every flow-warping-error
# implementation uses): a pixel is kept when |b + f(x+b)|² < ALPHA·(|b|² + |f(x+b)|²) + BETA.
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5

# Farnebäck parameters: OpenCV's documented example values (pyramid scale, levels, window, iterations,
# polynomial neighbourhood and sigma). Levels are reduced for small frames so the coarsest level is
# never smaller than the window.
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def optical_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Farnebäck flow from `src` to `dst` (uint8 RGB [H,W,3]): float32 [H,W,2] (dx, dy) such that
    src(x) ≈ dst(x + flow(x))."""
    import cv2

    h, w = src.shape[:2]
    params = dict(FARNEBACK)
    # Each pyramid level halves the size; stop while the coarsest level still holds a window.
    while params["levels"] > 0 and min(h, w) / (2 ** params["levels"]) < params["winsize"]:
        params["levels"] -= 1
    return cv2.calcOpticalFlowFarneback(
        _gray(src),
        _gray(dst),
        None,
        params["pyr_scale"],
        params["levels"],
        params["winsize"],
        params["iterations"],
        params["poly_n"],
        params["poly_sigma"],
        0,
    )


def _sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx + flow[..., 0], yy + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)), bilinear (cv2.remap). Works for any channel count."""
    import cv2

    map_x, map_y = _sample_maps(flow)
    return cv2.remap(
        np.ascontiguousarray(image), map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def consistency_mask(
    backward: np.ndarray, forward: np.ndarray, alpha: float = CONSISTENCY_ALPHA, beta: float = CONSISTENCY_BETA
) -> np.ndarray:
    """On frame t+1's grid: True where following the backward flow b (t+1 -> t) and then the forward
    flow f (t -> t+1) comes back to the start, |b + f(x+b)|² < α(|b|² + |f(x+b)|²) + β, and where
    x + b(x) lies inside frame t (a pixel that comes from outside the frame has nothing to compare)."""
    h, w = backward.shape[:2]
    f_at = warp(forward.astype(np.float32), backward)
    total = backward + f_at
    lhs = (total**2).sum(-1)
    rhs = alpha * ((backward**2).sum(-1) + (f_at**2).sum(-1)) + beta
    map_x, map_y = _sample_maps(backward)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return (lhs < rhs) & inside


def input_flows(input_frames: np.ndarray, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(forward t->t+1, backward t+1->t) Farnebäck flow of every consecutive input pair, at width x height."""
    frames = resize_frames(check_frames(input_frames, "input frames"), width, height)
    return [
        (optical_flow(frames[t], frames[t + 1]), optical_flow(frames[t + 1], frames[t])) for t in range(len(frames) - 1)
    ]


def check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    """`frames` as a non-empty uint8 [N,H,W,3] array, or InputError naming `what`."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"{what} must be a non-empty uint8 array [N,H,W,3], got {frames.dtype} {frames.shape}")
    return frames
