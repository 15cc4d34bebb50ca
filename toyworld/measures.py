"""Ground-truth measures of an edit in the toy world, where the true masks and flow are known.

- edit accuracy: share of frames where the edited object's colour, read inside its TRUE mask
  (`world.colour_of`), is the target colour;
- structure kept: IoU of the pixels that show the target colour (near the object) with the true mask;
- temporal consistency: warp error of consecutive edited frames under the TRUE flow, inside the
  object's mask where the object is visible in both frames (mean squared difference, grey levels²).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from toyworld.world import COLOURS, FLOORS, colour_of, hsv

# Hue classes a pixel can belong to: the object palette plus the floors that have a hue (brown),
# so that a brown floor is never read as a red or yellow object.
_CLASSES = {**COLOURS, **{k: v for k, v in FLOORS.items() if k == "brown"}}
_CLASS_HSV = {k: colorsys.rgb_to_hsv(*(np.array(v) / 255.0)) for k, v in _CLASSES.items()}


def hue_classes(frame: np.ndarray) -> np.ndarray:
    """(H,W) array of class names ('' for unsaturated pixels): nearest class in (hue, saturation)."""
    h, sat, mx = hsv(frame)
    names = list(_CLASS_HSV)
    dist = []
    for n in names:
        ch, cs, _ = _CLASS_HSV[n]
        dh = np.abs(h - ch)
        dh = np.minimum(dh, 1 - dh)
        dist.append(dh * 4 + np.abs(sat - cs) * (0.5 if n != "brown" else 1.5))
    out = np.array(names, dtype=object)[np.argmin(np.stack(dist), 0)]
    out[(sat < 0.4) | (mx < 0.15)] = ""
    return out


def _box(mask: np.ndarray, margin: float = 0.3) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    y0, y1 = max(0, int(ys.min() - margin * h)), min(mask.shape[0], int(ys.max() + margin * h) + 1)
    x0, x1 = max(0, int(xs.min() - margin * w)), min(mask.shape[1], int(xs.max() + margin * w) + 1)
    return slice(y0, y1), slice(x0, x1)


def structure_iou(frame: np.ndarray, mask: np.ndarray, colour: str) -> float:
    """IoU, inside the object's box (30 % margin), of target-coloured pixels with the true mask.
    Pattern pixels of the object (dark stripes, dots) count as the object's when they carry its hue."""
    if not mask.any():
        return float("nan")
    ys, xs = _box(mask)
    pred = hue_classes(frame[ys, xs]) == colour
    true = mask[ys, xs]
    union = (pred | true).sum()
    return float((pred & true).sum() / union) if union else float("nan")


def warp_error(frames: np.ndarray, masks: np.ndarray, ids: np.ndarray, flow: np.ndarray, obj: int) -> float:
    """Mean over consecutive pairs of the mean squared difference (grey levels²) between frame t and
    frame t+1 sampled at p + flow_t(p), over pixels p of object `obj` still visible at the target."""
    errs = []
    n, h, w = ids.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(n - 1):
        tx = np.rint(xx + flow[t, ..., 0]).astype(int)
        ty = np.rint(yy + flow[t, ..., 1]).astype(int)
        ok = masks[t, obj] & (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
        ok[ok] &= ids[t + 1][ty[ok], tx[ok]] == obj
        if not ok.any():
            continue
        a = frames[t][ok].astype(np.float32)
        b = frames[t + 1][ty[ok], tx[ok]].astype(np.float32)
        errs.append(float(((a - b) ** 2).mean()))
    return float(np.mean(errs)) if errs else float("nan")


@dataclass
class EditScore:
    accuracy: float  # share of frames with the target colour inside the true mask
    iou: float  # mean structure IoU
    warp: float  # warp error, grey levels²

    def row(self) -> dict[str, float]:
        return {"edit_accuracy": self.accuracy, "structure_iou": self.iou, "warp_error": self.warp}


def score_edit(
    frames: np.ndarray, masks: np.ndarray, ids: np.ndarray, flow: np.ndarray, obj: int, colour: str
) -> EditScore:
    visible = [t for t in range(len(frames)) if masks[t, obj].sum() >= 20]
    hits = [colour_of(frames[t][masks[t, obj]]) == colour for t in visible]
    ious = [structure_iou(frames[t], masks[t, obj], colour) for t in visible]
    return EditScore(
        accuracy=float(np.mean(hits)) if hits else float("nan"),
        iou=float(np.nanmean(ious)) if ious else float("nan"),
        warp=warp_error(frames, masks, ids, flow, obj),
    )
