"""The input clip's optical flow at the latent's resolution, for the options beyond the paper that warp
the previous frame along the motion (docs/METHOD.md, "Beyond the paper").

    flow = video_flow(frames, factor=8)        # float32 [N,6,H/8,W/8], once per video (precompute)

Estimated on the input frames alone, with OpenCV's weight-free estimators (DIS by default, Farnebäck
as in the Pixel-MSE metric), so it depends on nothing the editor computes and can be stored beside the
depth and reused by every prompt. Per frame i, six channels on frame i's latent grid:

- 0, 1: the flow to frame i−1 (dx, dy in latent cells): frame_i(x) ≈ frame_{i−1}(x + flow(x));
- 2: its validity in [0, 1], the share of the cell's pixels that pass the forward-backward check;
- 3, 4, 5: the same towards frame i+1 (what a reverse edit's previous frame is).

A frame with no neighbour on a side (the first, the last, a one-frame clip) has zero flow and zero
validity there, so whatever uses it falls back to doing nothing, never to NaN.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import InputError

ESTIMATORS = ("dis", "farneback")
CHANNELS = 6
TO_PREV = slice(0, 3)  # dx, dy, valid towards frame i-1
TO_NEXT = slice(3, 6)  # dx, dy, valid towards frame i+1


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _dis(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    import cv2

    # MEDIUM: OpenCV's preset between speed and accuracy; finest scale 1 keeps the detail of small frames.
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_gray(src), _gray(dst), None)


def pair_flow(a: np.ndarray, b: np.ndarray, estimator: str = "dis") -> tuple[np.ndarray, np.ndarray]:
    """(forward a→b, backward b→a) flow of two uint8 RGB frames [H,W,3], float32 [H,W,2] in pixels, each
    such that src(x) ≈ dst(x + flow(x))."""
    if estimator == "dis":
        return _dis(a, b), _dis(b, a)
    if estimator == "farneback":
        from pipeline.quality.flow import optical_flow

        return optical_flow(a, b), optical_flow(b, a)
    raise InputError(f"flow estimator {estimator!r} is not one of: {', '.join(ESTIMATORS)}")


def _to_latent(flow: np.ndarray, valid: np.ndarray, factor: int) -> np.ndarray:
    """[3,h,w]: the flow block-averaged over factor x factor pixels and divided by the factor (latent
    cells), and the share of valid pixels per block."""
    h, w = valid.shape
    blocks = lambda x: x.reshape(h // factor, factor, w // factor, factor, *x.shape[2:]).mean(axis=(1, 3))  # noqa: E731
    out = np.concatenate([blocks(flow) / factor, blocks(valid.astype(np.float32))[..., None]], axis=-1)
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def video_flow(frames: np.ndarray, factor: int, estimator: str = "dis") -> np.ndarray:
    """float32 [N,6,H/factor,W/factor] (the module's docstring) for uint8 frames [N,H,W,3] at the edit
    size; `factor` is the VAE's pixels per latent cell (8 for SD2)."""
    from pipeline.quality.flow import consistency_mask

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"frames must be a non-empty uint8 array [N,H,W,3], got {frames.dtype} {frames.shape}")
    n, height, width, _ = frames.shape
    if height % factor or width % factor:
        raise InputError(f"frame size {width}x{height} is not a multiple of the latent factor {factor}")
    out = np.zeros((n, CHANNELS, height // factor, width // factor), np.float32)
    for i in range(1, n):
        forward, backward = pair_flow(frames[i - 1], frames[i], estimator)
        if not (np.isfinite(forward).all() and np.isfinite(backward).all()):
            continue  # an estimator's failure: that pair is edited without flow
        out[i, TO_PREV] = _to_latent(backward, consistency_mask(backward, forward), factor)
        out[i - 1, TO_NEXT] = _to_latent(forward, consistency_mask(forward, backward), factor)
    return out


def flow_shape(num_frames: int, height: int, width: int, factor: int) -> tuple[int, int, int, int]:
    """The shape `video_flow` gives frames [N,H,W,3] at the latent factor `factor`."""
    return (num_frames, CHANNELS, height // factor, width // factor)


def flow_problem(flow: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why `flow` cannot be the flow of a video that needs `shape` (`flow_shape`), or None: a stored
    flow of another clip or size, or a damaged one, is never used."""
    if flow.shape != tuple(shape):
        return f"the flow is {flow.shape} but the video needs {tuple(shape)}"
    if not np.issubdtype(flow.dtype, np.floating) or not np.isfinite(flow).all():
        return f"the flow is not finite float values (dtype {flow.dtype})"
    return None


def flow_in_order(flow: np.ndarray, reverse: bool) -> np.ndarray:
    """[N,3,h,w] per frame: (dx, dy, valid) towards the frame edited before it (i−1, or i+1 reversed)."""
    return flow[:, TO_NEXT] if reverse else flow[:, TO_PREV]
