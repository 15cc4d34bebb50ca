"""Runs of one manifest side by side, for the report's `--baseline` and `--compare` (pipeline/report/page.py).

Per (clip, prompt) edited by this run and at least one other, the report shows:

- one animated image whose every frame holds labelled panels, input | baseline | this run | compared
  runs, so they all play in step (separate videos drift apart);
- a frame strip (PNG): one row per panel, every k-th frame, so flicker is seen on a still page too;
- each run's metrics (Pixel-MSE, the flicker metric, and the CLIP scores) where they were scored.

The animation is a lossless WebP (Chromium, Firefox, Safari 14+ and Edge play it), not a GIF: a GIF's
256 colours band the toy world's gradients, and dithering them makes a pattern that changes with
every frame, itself a flicker, on the steady edit as much as on the flickering one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

DEFAULT_LABEL = "Pix2Video"  # this run's name on the page, beside the baseline's
STRIP_COLUMNS = 8  # frames per row of a strip (every k-th frame, k = ceil(frames / columns))
STRIP_HEIGHT = 128  # pixels per row of a strip
_WHITE = (255, 255, 255)
_INK = (34, 34, 34)
_MUTED = (110, 110, 110)


@dataclass(frozen=True)
class Panel:
    """One row of a strip or one picture of the animation: uint8 frames [N,H,W,3] under a label."""

    label: str
    frames: np.ndarray


def pair_key(row: dict[str, Any]) -> tuple[str, str]:
    """What makes two rows of two runs of one manifest the same edit: the clip's id and the prompt."""
    return (str(row.get("id") or ""), str(row.get("prompt") or ""))


def match_rows(rows: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict]:
    """The baseline's row for each (id, prompt) that both runs have (the first, if one repeats)."""
    theirs: dict[tuple[str, str], dict] = {}
    for r in baseline:
        theirs.setdefault(pair_key(r), r)
    return {k: theirs[k] for k in (pair_key(r) for r in rows) if k in theirs}


def aligned(panels: Sequence[Panel], *, max_frames: int, ref: int = -1) -> list[Panel]:
    """The panels at panel `ref`'s size and length (at most `max_frames`): the others resized, and
    cut or held on their last frame. Panel `ref` is the edit the page is about."""
    import numpy as np

    from pipeline.io.frames import resize_frames

    ref_frames = panels[ref].frames[:max_frames]
    n, (h, w) = len(ref_frames), ref_frames.shape[1:3]
    out = []
    for p in panels:
        frames = resize_frames(p.frames[:n], w, h)
        if len(frames) < n:
            frames = np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), axis=0)])
        out.append(Panel(p.label, frames))
    return out


def comparison_animation(
    panels: Sequence[Panel], path: Path, *, fps: float, height: int, max_frames: int, ref: int = -1
) -> Path:
    """An animated WebP of the panels side by side under their labels, `height` pixels per panel, at
    panel `ref`'s size and length (`aligned`)."""
    from PIL import Image, ImageDraw

    panels = aligned(panels, max_frames=max_frames, ref=ref)
    h, w = panels[0].frames.shape[1:3]
    pw = max(1, round(w * height / h))
    gap = max(4, pw // 32)
    band = min(28, max(18, round(height * 0.12)))
    font = _font(round(band * 0.65))
    canvas = Image.new("RGB", (len(panels) * pw + (len(panels) - 1) * gap, band + height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    for i, p in enumerate(panels):
        _centred(draw, p.label, font, i * (pw + gap), pw, band, _INK)
    images = []
    for t in range(len(panels[0].frames)):
        frame = canvas.copy()
        for i, p in enumerate(panels):
            frame.paste(Image.fromarray(p.frames[t]).resize((pw, height), Image.BICUBIC), (i * (pw + gap), band))
        images.append(frame)
    duration = max(20, round(1000 / fps)) if fps and fps > 0 and math.isfinite(fps) else 125
    return save_webp(images, path, duration=duration)


def save_webp(images: Sequence[Image.Image], path: Path, *, duration: int) -> Path:
    """An endless animated WebP, lossless: every frame's colours as the video has them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path, format="WEBP", save_all=True, append_images=list(images[1:]), duration=duration, loop=0, lossless=True
    )
    return path


def strip_step(num_frames: int, columns: int = STRIP_COLUMNS) -> int:
    """k of 'every k-th frame': the smallest that fits the clip in `columns` columns."""
    return max(1, math.ceil(num_frames / max(1, columns)))


def frame_strip(
    panels: Sequence[Panel],
    path: Path,
    *,
    height: int = STRIP_HEIGHT,
    columns: int = STRIP_COLUMNS,
    ref: int = -1,
) -> tuple[Path, int]:
    """A PNG with one row per panel (its label on the left) and every k-th frame of the clip from left
    to right, numbered on top, at panel `ref`'s size and length; returns (path, k)."""
    from PIL import Image, ImageDraw

    panels = aligned(panels, max_frames=len(panels[ref].frames), ref=ref)
    n, (h, w) = len(panels[0].frames), panels[0].frames.shape[1:3]
    step = strip_step(n, columns)
    shown = list(range(0, n, step))
    cw = max(1, round(w * height / h))
    gap = 2
    font = _font(max(11, min(16, height // 8)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 12 + max(round(measure.textlength(p.label, font=font)) for p in panels)
    label_w = min(label_w, max(80, 2 * cw))
    header = 20
    size = (label_w + len(shown) * (cw + gap), header + len(panels) * (height + gap))
    image = Image.new("RGB", size, _WHITE)
    draw = ImageDraw.Draw(image)
    for j, t in enumerate(shown):
        _centred(draw, f"frame {t}", font, label_w + j * (cw + gap), cw, header, _MUTED)
    for i, p in enumerate(panels):
        y = header + i * (height + gap)
        _centred(draw, p.label, font, 0, label_w - 6, height, _INK, left=True, top=y)
        for j, t in enumerate(shown):
            tile = Image.fromarray(p.frames[t]).resize((cw, height), Image.BICUBIC)
            image.paste(tile, (label_w + j * (cw + gap), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    return path, step


def column_means(rows: Sequence[Sequence[float | None]], ref: int = 0) -> dict[str, Any] | None:
    """`rows[i][c]`: pair i's value of one metric in run (column) c. The mean per column over the pairs
    where every column has a value, and per column on how many of them it is below column `ref`'s
    (for Pixel-MSE: flickers less than it); None when no pair has them all."""
    full = [[float(v) for v in r] for r in rows if all(_finite(v) for v in r)]
    if not full:
        return None
    columns = range(len(full[0]))
    return {
        "pairs": len(full),
        "means": [sum(r[c] for r in full) / len(full) for c in columns],
        "below": [sum(r[c] < r[ref] for r in full) for c in columns],
    }


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _centred(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: Any,
    x: int,
    width: int,
    height: int,
    fill: tuple[int, int, int],
    *,
    left: bool = False,
    top: int = 0,
) -> None:
    """`text` in the box (x, top, width, height): centred (or from the left edge), shortened with an
    ellipsis when it does not fit."""
    text = _fit(draw, text, font, width - 4)
    tw = draw.textlength(text, font=font)
    bbox = draw.textbbox((0, 0), text or "x", font=font)
    th = bbox[3] - bbox[1]
    tx = x + 4 if left else x + (width - tw) / 2
    draw.text((tx, top + (height - th) / 2 - bbox[1]), text, font=font, fill=fill)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""
