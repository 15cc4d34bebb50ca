"""Small PNG line plots drawn with Pillow (no plotting library: the report only needs per-frame curves).

`line_panel` draws one titled panel with one line per series (NaN leaves a gap); `metrics_figure`
puts the three metrics of a clip (edit vs. input) side by side in one PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Edit in blue, input baseline in grey: the same colours as the report's tables.
COLORS = ((31, 119, 180), (150, 150, 150), (214, 39, 40), (44, 160, 44))
PANEL_SIZE = (320, 200)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable default font
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    if v == 0 or 0.01 <= abs(v) < 1000:
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:.2e}"


def line_panel(
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xs: Sequence[float] | None = None,
    size: tuple[int, int] = PANEL_SIZE,
    x_label: str = "frame",
) -> Image.Image:
    """One panel: a line per series over `xs` (default 0, 1, ...), legend, y range labels."""
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    small, normal = _font(10), _font(12)
    left, right, top, bottom = 44, 10, 34, 28
    draw.text((left, 4), title, fill="black", font=normal)
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    longest = max((len(vs) for vs in series.values()), default=0)
    if xs is None:
        xs = list(range(longest))
    x0, x1 = (min(xs), max(xs)) if len(xs) else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if values:
        y0, y1 = min(values), max(values)
        pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.05, 1e-3)
        # No negative axis for non-negative data (errors, MSE): padding must not invent values below 0.
        y0, y1 = (max(y0 - pad, 0.0) if y0 >= 0 else y0 - pad), y1 + pad
    else:
        y0, y1 = 0.0, 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(180, 180, 180))
    for y in (y0, (y0 + y1) / 2, y1):
        _, py = px(x0, y)
        draw.line([left - 3, py, left, py], fill="black")
        draw.text((2, py - 6), _fmt(y), fill="black", font=small)
    for x in sorted({xs[0], xs[-1]} if len(xs) else set()):
        qx, _ = px(x, y0)
        draw.line([qx, top + plot_h, qx, top + plot_h + 3], fill="black")
        draw.text((qx - 4, top + plot_h + 4), f"{x:g}", fill="black", font=small)
    draw.text((left + plot_w / 2 - 12, height - 13), x_label, fill=(90, 90, 90), font=small)
    if not values:
        draw.text((left + 10, top + plot_h / 2 - 6), "no values", fill=(120, 120, 120), font=normal)
    legend_x = left + 4
    for i, (name, vs) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        run: list[tuple[float, float]] = []
        for x, v in zip(xs, vs, strict=False):
            if v is None or not math.isfinite(v):
                _polyline(draw, run, color)
                run = []
                continue
            run.append(px(x, v))
        _polyline(draw, run, color)
        draw.line([legend_x, top - 8, legend_x + 14, top - 8], fill=color, width=2)
        draw.text((legend_x + 17, top - 14), name, fill="black", font=small)
        legend_x += 24 + draw.textlength(name, font=small)
    return img


def _polyline(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], color: tuple[int, int, int]) -> None:
    if len(points) == 1:
        x, y = points[0]
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
    elif points:
        draw.line(points, fill=color, width=2)
    for x, y in points if len(points) <= 40 else ():
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=color)


def metrics_figure(
    per_frame: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike, titles: Mapping[str, str]
) -> Path:
    """One PNG, one panel per metric. `per_frame[label][metric]` are per-frame (clip_text) or
    per-pair values; pair t (frames t -> t+1) is drawn at x = t+1, the frame it lands on."""
    panels = []
    for metric, title in titles.items():
        series = {label: list(values.get(metric, [])) for label, values in per_frame.items()}
        n = max((len(v) for v in series.values()), default=0)
        pairwise = metric != "clip_text"
        xs = [t + 1 for t in range(n)] if pairwise else list(range(n))
        panels.append(line_panel(series, title=title, xs=xs, x_label="frame (pair t-1 -> t)" if pairwise else "frame"))
    width = sum(p.width for p in panels)
    out = Image.new("RGB", (max(width, 1), max((p.height for p in panels), default=1)), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, format="PNG")
    return path
