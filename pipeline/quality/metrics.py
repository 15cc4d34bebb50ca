"""The paper's three quality metrics (Pix2Video, ICCV 2023, Table 1), for any edited video.

- CLIP-Text  (higher is better): mean over output frames of the cosine similarity between the CLIP
  embedding of the frame and that of the target prompt. How well the edit follows the text.
- CLIP-Image (higher is better): mean over consecutive output frames of the cosine similarity of
  their CLIP image embeddings. How much the content stays the same from frame to frame.
- Pixel-MSE  (lower is better): for every pair of consecutive frames, the output frame t is warped to
  t+1 with optical flow computed on the INPUT frames, and compared with output frame t+1: mean squared
  error, 0-255 scale, all three channels, over the pixels whose flow passes a forward-backward
  consistency check (occlusions and pixels that come from outside the frame are left out). Mean over
  pairs. Flicker and drift that the input's motion does not explain.

Values are raw cosine similarities (not the "CLIP score" convention of 100 x cos clipped at 0).

The flow is OpenCV's Farnebäck: weight-free, deterministic, runs anywhere (the paper used RAFT; absolute
Pixel-MSE values are therefore not comparable to the paper's, relative ones between variants are).

The same metrics on the input video (its frames against the target prompt; its own consecutive
frames; its own flow-warping error) are the baseline an edit is compared to.

CLIP scoring lives in pipeline.quality.clip, flow and warping in pipeline.quality.flow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.io.frames import resize_frames
from pipeline.quality.clip import ClipScorer, clip_image_scores, clip_text_scores
from pipeline.quality.flow import check_frames, consistency_mask, input_flows, warp
from pipeline.quality.names import METRIC_NAMES, METRIC_TITLES


def pixel_mse_scores(
    output_frames: np.ndarray,
    input_frames: np.ndarray | None = None,
    *,
    flows: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Per consecutive pair: MSE (0-255 scale, all channels) between output t+1 and output t warped
    by the input's flow, over consistent pixels. [N-1]; NaN for a pair with no consistent pixel.

    Input frames are resized to the output size first (the editor works at multiples of the model's
    size multiple, 64 for SD2).
    `flows` (from `input_flows`) lets a caller reuse the input's flow for many outputs.
    """
    output_frames = check_frames(output_frames, "output frames")
    if flows is None:
        if input_frames is None:
            raise ValueError("pixel_mse_scores needs input_frames or flows")
        flows = input_flows(input_frames, output_frames.shape[2], output_frames.shape[1])
    if len(flows) != max(len(output_frames) - 1, 0):
        raise InputError(
            f"the output has {len(output_frames)} frames but the input {len(flows) + 1}: "
            "metrics need the input video the output was made from"
        )
    out = np.zeros(len(flows))
    for t, (forward, backward) in enumerate(flows):
        warped = warp(output_frames[t].astype(np.float32), backward)
        mask = consistency_mask(backward, forward)
        if not mask.any():
            out[t] = math.nan
            continue
        diff = warped[mask] - output_frames[t + 1].astype(np.float32)[mask]
        out[t] = float((diff.astype(np.float64) ** 2).mean())
    return out


# ----------------------------------------------------------------------------------------- results


def _mean(values: np.ndarray | Sequence[float]) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


@dataclass
class Metrics:
    """The three metrics of one video (means; None where undefined, e.g. Pixel-MSE of one frame) and
    their per-frame values (clip_text per frame; clip_image and pixel_mse per consecutive pair, NaN
    where undefined)."""

    clip_text: float | None
    clip_image: float | None
    pixel_mse: float | None
    per_frame: dict[str, list[float]] = field(default_factory=dict)

    def row(self, prefix: str = "") -> dict[str, float | None]:
        """{'clip_text': ..., 'clip_image': ..., 'pixel_mse': ...} with an optional column prefix."""
        return {prefix + name: getattr(self, name) for name in METRIC_NAMES}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # JSON has no NaN; None keeps the frame's position.
        d["per_frame"] = {k: [None if not math.isfinite(v) else v for v in vs] for k, vs in self.per_frame.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        per_frame = {k: [math.nan if v is None else float(v) for v in vs] for k, vs in d.get("per_frame", {}).items()}
        return cls(d.get("clip_text"), d.get("clip_image"), d.get("pixel_mse"), per_frame)


def video_metrics(
    frames: np.ndarray,
    prompt: str | None,
    scorer: ClipScorer,
    *,
    flows: list[tuple[np.ndarray, np.ndarray]] | None = None,
    input_frames: np.ndarray | None = None,
) -> Metrics:
    """The three metrics of `frames` (uint8 [N,H,W,3]).

    Pixel-MSE uses the flow of `input_frames` (or precomputed `flows` at the frames' size); give the
    input video itself (or nothing: then its own flow is used) for the input's baseline.
    CLIP-Text is None without a prompt.
    """
    frames = check_frames(frames, "frames")
    emb = scorer.image_embeddings(frames)
    text = clip_text_scores(emb, scorer.text_embedding(prompt)) if prompt else np.zeros(0)
    image = clip_image_scores(emb)
    if flows is None:
        flows = input_flows(frames if input_frames is None else input_frames, frames.shape[2], frames.shape[1])
    mse = pixel_mse_scores(frames, flows=flows) if len(frames) > 1 else np.zeros(0)
    return Metrics(
        clip_text=_mean(text) if prompt else None,
        clip_image=_mean(image),
        pixel_mse=_mean(mse),
        per_frame={"clip_text": text.tolist(), "clip_image": image.tolist(), "pixel_mse": mse.tolist()},
    )


def edit_metrics(
    output_frames: np.ndarray, input_frames: np.ndarray, prompt: str, scorer: ClipScorer
) -> tuple[Metrics, Metrics]:
    """(metrics of the edit, metrics of the input video as the baseline), both against `prompt`.

    The input is scored at the output's size, so both rows see the same pixels per frame and the
    flow is computed once for both.
    """
    output_frames = check_frames(output_frames, "output frames")
    input_frames = check_frames(input_frames, "input frames")
    if len(output_frames) != len(input_frames):
        raise InputError(
            f"the output has {len(output_frames)} frames but the input {len(input_frames)}: "
            "metrics need the input video the output was made from"
        )
    h, w = output_frames.shape[1:3]
    resized = resize_frames(input_frames, w, h)
    flows = input_flows(resized, w, h)
    return (
        video_metrics(output_frames, prompt, scorer, flows=flows),
        video_metrics(resized, prompt, scorer, flows=flows),
    )


def within_bounds(
    row: dict[str, Any], *, min_clip_text: float | None = None, max_pixel_mse: float | None = None
) -> bool:
    """Does a results row pass the filter? A metric that is undefined for the clip (None/NaN: e.g.
    Pixel-MSE of a one-frame clip) does not fail it: there is nothing to judge."""

    def value(name: str) -> float | None:
        v = row.get(name)
        return None if v is None or not math.isfinite(float(v)) else float(v)

    ct, mse = value("clip_text"), value("pixel_mse")
    if min_clip_text is not None and ct is not None and ct < min_clip_text:
        return False
    return not (max_pixel_mse is not None and mse is not None and mse > max_pixel_mse)


def mean_metrics(rows: Sequence[dict[str, Any]], prefix: str = "") -> dict[str, float | None]:
    """Mean of each metric (column `prefix + name`) over `rows`, leaving out undefined values; None
    where no row has one. Keys are the plain metric names."""

    def mean(name: str) -> float | None:
        vs = [float(r[name]) for r in rows if r.get(name) is not None and math.isfinite(float(r[name]))]
        return sum(vs) / len(vs) if vs else None

    return {n: mean(prefix + n) for n in METRIC_NAMES}


def format_table(rows: Sequence[tuple[str, Metrics | dict[str, Any]]], title: str = "") -> str:
    """Aligned text table, one line per (label, metrics), columns in the paper's order."""
    header = ["", *(METRIC_TITLES[n] for n in METRIC_NAMES)]
    body = []
    for label, m in rows:
        values = m.row() if isinstance(m, Metrics) else m
        body.append([label, *(format_value(n, values.get(n)) for n in METRIC_NAMES)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [title] if title else []
    for r in [header, *body]:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


def format_value(name: str, value: float | None) -> str:
    """4 decimals for cosines, 2 for Pixel-MSE; '—' for undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.2f}" if name == "pixel_mse" else f"{value:.4f}"
