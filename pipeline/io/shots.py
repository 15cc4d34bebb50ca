"""What a clip is made of: its shots (hard cuts between them), detected or given.

A shot list is the index of every shot's first frame, in order, starting with 0: `[0]` for a clip
without a cut, `[0, 48]` for one cut before frame 48. The editor treats each shot as a video of its
own (its own anchor, inversion and caption), so a shot is never painted with another's appearance.

Detection uses PySceneDetect's `AdaptiveDetector` (scenedetect-headless, BSD) on the frames already
in memory: its detectors take one decoded frame at a time (`process_frame(timecode, bgr_image)`),
so no file is read twice and no video backend is involved. The adaptive detector compares each
frame's HSV change with the mean change of its neighbours (2 frames on each side), so steady camera
motion (pans, zooms) raises the baseline rather than triggering a cut. Its defaults are kept except
the shortest shot (`MIN_SHOT_FRAMES`); BENCHMARKS.md ("Shot cuts") has the measurement on joined
and unjoined toy-world clips, pans and zooms included, against the library's fixed-threshold
`ContentDetector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.errors import InputError

SHOTS_MODES = ("auto", "off")  # --shots: detect cuts, or edit the clip as one shot

# The shortest shot the detector makes (frames); a cut closer than this to the previous one is not
# taken (PySceneDetect's `min_scene_len`, default 15 frames ≈ 0.6 s at 25 fps). A shot shorter than
# this gives the method too little to anchor on, and flashes (a frame or two of changed light) are
# the usual false cuts.
MIN_SHOT_FRAMES = 15

# What made a detected shot list (a precompute store keeps it beside the shots, and detects again
# when this changes): the library, its version's series, the detector and its settings.
DETECTOR = f"scenedetect-0.7/AdaptiveDetector/min_scene_len={MIN_SHOT_FRAMES}"


def detect_shots(frames: np.ndarray, *, min_shot: int = MIN_SHOT_FRAMES) -> list[int]:
    """First frame of every shot of `frames` (uint8 [N,H,W,3] RGB), `[0]` when there is no cut.

    PySceneDetect's AdaptiveDetector, fed the frames one by one; it cannot place a cut in the first or
    last two frames (its window needs two frames on each side), which `min_shot` rules out anyway."""
    from scenedetect import AdaptiveDetector, FrameTimecode

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N,H,W,3], got {frames.shape}")
    detector = AdaptiveDetector(min_scene_len=min_shot)
    cuts: list[int] = []
    # Frame numbers only: the detector's timing is in frames when min_scene_len is an int, so the
    # frame rate (which scenedetect insists on) does not change anything.
    fps = 25.0
    for i, frame in enumerate(frames):
        bgr = np.ascontiguousarray(frame[..., ::-1])
        cuts += [tc.frame_num for tc in detector.process_frame(FrameTimecode(i, fps), bgr)]
    cuts += [tc.frame_num for tc in detector.post_process(FrameTimecode(max(len(frames) - 1, 0), fps))]
    return [0] + sorted({int(c) for c in cuts if 0 < c < len(frames)})


def check_shots(shots: object, num_frames: int, where: str) -> list[int]:
    """A given shot list, checked against the clip: whole numbers, increasing, each below
    `num_frames`; 0 is added when missing (`[48]` means `[0, 48]`). `where` names the input in the
    one-line error (e.g. "row 3, column 'shots'")."""
    if isinstance(shots, np.ndarray):
        shots = shots.tolist()
    if isinstance(shots, int | np.integer) and not isinstance(shots, bool):
        shots = [shots]
    if not isinstance(shots, Sequence) or isinstance(shots, str | bytes):
        raise InputError(f"{where}: shots must be a list of first-frame indices such as [0, 48], got {shots!r}")
    out: list[int] = []
    for value in shots:
        if isinstance(value, bool) or not isinstance(value, int | np.integer | float) or float(value) != int(value):
            raise InputError(f"{where}: shots must be whole frame indices such as [0, 48], got {value!r}")
        out.append(int(value))
    given = list(out)
    if out and out[0] != 0:
        out = [0, *out]
    if not out:
        out = [0]
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise InputError(f"{where}: shots must be increasing first-frame indices such as [0, 48], got {given}")
    if out[-1] >= num_frames or out[0] < 0:
        raise InputError(
            f"{where}: shot start {out[-1] if out[-1] >= num_frames else out[0]} is outside the clip's "
            f"{num_frames} frames (0 .. {num_frames - 1})"
        )
    return out


def shot_ranges(shots: Sequence[int], num_frames: int) -> list[tuple[int, int]]:
    """(start, stop) of every shot, stop exclusive: `[0, 48]` over 64 frames -> [(0, 48), (48, 64)]."""
    bounds = [*shots, num_frames]
    return [(int(a), int(b)) for a, b in zip(bounds, bounds[1:], strict=False)]


def shot_anchors(frames: Sequence[Any], shots: Sequence[int], anchor_last: bool = False) -> list[Any]:
    """Each shot's anchor frame: its first, or its last with --reverse (each shot is a video of its own)."""
    return [frames[stop - 1] if anchor_last else frames[start] for start, stop in shot_ranges(shots, len(frames))]


def parse_shots_flag(text: str) -> str | list[int]:
    """--shots: 'auto', 'off', or a comma-separated list of first-frame indices ('0,48')."""
    value = str(text).strip().lower()
    if value in SHOTS_MODES:
        return value
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--shots must be auto, off or first-frame indices such as 0,48; got {text!r}") from None
