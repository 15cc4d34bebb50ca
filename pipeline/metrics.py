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

CLIP model: a hub id or local folder of a `CLIPModel` checkpoint, default
`openai/clip-vit-large-patch14` (the paper's). `"tiny"` is the tiny random CLIP of `pipeline.tiny`:
METRIC VALUES FROM THE TINY CLIP ARE MEANINGLESS, except as a test that the code runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.models import TINY, is_local, load_pretrained, resolve_device, resolve_dtype, resolve_model

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
CLIP_MODEL_HELP = (
    f"CLIP model for the metrics: a hub id or local CLIPModel folder (default {DEFAULT_CLIP_MODEL}, "
    "the paper's); 'tiny' = a tiny random CLIP built locally (its metric values are meaningless, "
    "for tests only)"
)
METRIC_NAMES = ("clip_text", "clip_image", "pixel_mse")
# For tables and pages: the paper's column titles, and which way is better.
METRIC_TITLES = {"clip_text": "CLIP-Text ↑", "clip_image": "CLIP-Image ↑", "pixel_mse": "Pixel-MSE ↓"}
# The same in plain ASCII, for images drawn with Pillow's default font (which has no arrows).
PLOT_TITLES = {
    "clip_text": "CLIP-Text (higher = better)",
    "clip_image": "CLIP-Image (higher = better)",
    "pixel_mse": "Pixel-MSE (lower = better)",
}

# Forward-backward consistency check (Sundaram et al. 2010; the thresholds every flow-warping-error
# implementation uses): a pixel is kept when |b + f(x+b)|² < ALPHA·(|b|² + |f(x+b)|²) + BETA.
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5

# Farnebäck parameters: OpenCV's documented example values (pyramid scale, levels, window, iterations,
# polynomial neighbourhood and sigma). Levels are reduced for small frames so the coarsest level is
# never smaller than the window.
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}

_CLIP_LAYOUT = "a CLIPModel checkpoint (config.json, weights, tokenizer and preprocessor files)"


# ------------------------------------------------------------------------------------------- CLIP


def _clip_image_processor_class() -> type:
    # The PIL backend whatever is installed (torchvision is not a dependency): transformers 5 defaults
    # to torchvision and falls back with a warning; one backend everywhere means one number everywhere.
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _features(out: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4 returned
    # the tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """CLIP image and text embeddings, L2-normalised, so a dot product is a cosine similarity.

    Load once (`ClipScorer.from_model`), score many videos.
    """

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        *,
        device: torch.device,
        dtype: torch.dtype,
        source: str = "",
    ) -> None:
        self.model = model.to(device=device).eval().requires_grad_(False)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.source = source
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_model(
        cls,
        model: str = DEFAULT_CLIP_MODEL,
        *,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device | None = None,
    ) -> ClipScorer:
        """A CLIPModel hub id or folder; 'tiny' -> the tiny folder's clip/ (meaningless values)."""
        from transformers import AutoTokenizer, CLIPModel

        torch_dtype = resolve_dtype(dtype)
        dev = resolve_device(device)
        path = os.path.join(resolve_model(TINY), "clip") if model == TINY else model
        try:
            net = load_pretrained(CLIPModel.from_pretrained, path, layout=_CLIP_LAYOUT, dtype=torch_dtype)
            image_processor = load_pretrained(_clip_image_processor_class().from_pretrained, path, layout=_CLIP_LAYOUT)
            tokenizer = load_pretrained(AutoTokenizer.from_pretrained, path, layout=_CLIP_LAYOUT)
        except InputError as e:
            if is_local(path):
                raise
            # load_pretrained's message points at --model; the metrics' flag is --clip-model.
            raise InputError(
                f"CLIP model {model!r} is not a local folder and could not be loaded from the Hugging Face "
                f"hub (offline?): give a folder with {_CLIP_LAYOUT}, or --clip-model tiny (test values only)"
            ) from e
        return cls(net, image_processor, tokenizer, device=dev, dtype=torch_dtype, source=model)

    @torch.inference_mode()
    def image_embeddings(self, frames: np.ndarray | Sequence[np.ndarray], batch_size: int = 16) -> torch.Tensor:
        """uint8 [N,H,W,3] -> [N,D] float32 unit vectors (on the CPU)."""
        items = [np.asarray(f) for f in frames]
        out = []
        for start in range(0, len(items), batch_size):
            pixels = self.image_processor(images=items[start : start + batch_size], return_tensors="pt")
            x = pixels["pixel_values"].to(device=self.device, dtype=self.dtype)
            out.append(_features(self.model.get_image_features(pixel_values=x)).float().cpu())
        if not out:
            return torch.empty(0, 0)
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    @torch.inference_mode()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        """One prompt -> [D] float32 unit vector (cached: a run scores many videos with one prompt)."""
        if prompt not in self._text_cache:
            tok = self.tokenizer([prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
            e = _features(
                self.model.get_text_features(
                    input_ids=tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device)
                )
            )
            self._text_cache[prompt] = torch.nn.functional.normalize(e.float().cpu()[0], dim=-1)
        return self._text_cache[prompt]


def clip_text_scores(image_embeddings: torch.Tensor, text_embedding: torch.Tensor) -> np.ndarray:
    """Per frame: cos(frame, prompt). [N]"""
    return (image_embeddings @ text_embedding).numpy().astype(np.float64)


def clip_image_scores(image_embeddings: torch.Tensor) -> np.ndarray:
    """Per consecutive pair: cos(frame t, frame t+1). [N-1]"""
    if image_embeddings.shape[0] < 2:
        return np.zeros(0)
    return (image_embeddings[:-1] * image_embeddings[1:]).sum(-1).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------- flow and warping


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


def pixel_mse_scores(
    output_frames: np.ndarray,
    input_frames: np.ndarray | None = None,
    *,
    flows: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Per consecutive pair: MSE (0-255 scale, all channels) between output t+1 and output t warped
    by the input's flow, over consistent pixels. [N-1]; NaN for a pair with no consistent pixel.

    Input frames are resized to the output size first (the editor works at multiples of 64).
    `flows` (from `input_flows`) lets a caller reuse the input's flow for many outputs.
    """
    output_frames = _check_frames(output_frames, "output frames")
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


def input_flows(input_frames: np.ndarray, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(forward t->t+1, backward t+1->t) Farnebäck flow of every consecutive input pair, at width x height."""
    from pipeline.frames import resize_frames

    frames = resize_frames(_check_frames(input_frames, "input frames"), width, height)
    return [
        (optical_flow(frames[t], frames[t + 1]), optical_flow(frames[t + 1], frames[t])) for t in range(len(frames) - 1)
    ]


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"{what} must be a non-empty uint8 array [N,H,W,3], got {frames.dtype} {frames.shape}")
    return frames


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
    frames = _check_frames(frames, "frames")
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
    output_frames = _check_frames(output_frames, "output frames")
    input_frames = _check_frames(input_frames, "input frames")
    if len(output_frames) != len(input_frames):
        raise InputError(
            f"the output has {len(output_frames)} frames but the input {len(input_frames)}: "
            "metrics need the input video the output was made from"
        )
    from pipeline.frames import resize_frames

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
