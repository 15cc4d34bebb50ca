"""The toy depth estimator: DPT-hybrid (`DPTForDepthEstimation`, ViT on a BiT stem, the architecture of
Intel/dpt-hybrid-midas that SD2-depth bundles) at toy widths, regressed on the toy world's true disparity.

Target and output follow MiDaS: relative inverse depth, larger = nearer. The loss is plain L1 between the
prediction and the true disparity normalised per image by its mean (d / mean(d): positive, of order 1,
scale-free like MiDaS's output, so the head's final ReLU never has to reach below zero), plus MiDaS's
scale-and-shift-invariant L1 (both maps aligned by median and mean absolute deviation) so that the ordering
of depths is what counts most.

Input size: the frames' own 128x128 (BiT's 16x reduction gives an 8x8 ViT grid); the
`feature_extractor/preprocessor_config.json` written by `save_depth` says `size: 128`, so
`DepthEstimator.from_model` feeds the model 128x128 images and returns 128x128 depth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toyworld.data import FrameSet
from toyworld.trainer import TrainSettings, batch_rng, component_trainer, optimise

SEED = 21
SETTINGS = TrainSettings(steps=1500, batch=8)
DEPTH_SIZE = 128  # DPT input (and output) resolution
BIT_DEPTHS = (1, 1, 1)  # bottleneck blocks per BiT stage
ORDINAL_MIN_RATIO = 0.05  # pixel pairs whose true disparities differ by less than 5% are not counted


def toy_dpt_config(size: int = DEPTH_SIZE) -> Any:
    """`tiny_dpt_config()` (the published DPT-hybrid keys and values) with wider layers, one BiT bottleneck
    block per stage (the published [3, 4, 9] would cost about twice the time per step), and a `size` input."""
    from fixtures.tiny import tiny_dpt_config

    cfg = tiny_dpt_config(depths=BIT_DEPTHS)
    bb = cfg.backbone_config
    bb.embedding_size = 16
    bb.hidden_sizes = [32, 64, 128]
    grid = size // 16
    cfg.backbone_featmap_shape = [1, bb.hidden_sizes[-1], grid, grid]
    cfg.image_size = size
    cfg.hidden_size = 64
    cfg.intermediate_size = 128
    cfg.neck_hidden_sizes = [32, 64, 64, 64]
    cfg.fusion_hidden_size = 32
    return cfg


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] at DEPTH_SIZE -> what the published DPT preprocessing gives (mean = std = 0.5)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _mean_normalised(d: torch.Tensor) -> torch.Tensor:
    return d / d.flatten(1).mean(1).clamp_min(1e-6)[:, None, None]


def _median_mad(d: torch.Tensor) -> torch.Tensor:
    flat = d.flatten(1)
    med = flat.median(1).values[:, None]
    mad = (flat - med).abs().mean(1, keepdim=True).clamp_min(1e-6)
    return ((flat - med) / mad).view_as(d)


def depth_loss(pred: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """L1(pred, d / mean d) + L1 of the median/MAD-aligned maps (MiDaS's scale-and-shift-invariant loss)."""
    plain = (pred - _mean_normalised(disparity)).abs().mean()
    ssi = (_median_mad(pred) - _median_mad(disparity)).abs().mean()
    return plain + 0.5 * ssi


def train_depth(data: FrameSet, workdir: str | os.PathLike, settings: TrainSettings = SETTINGS) -> Any:
    """Train a toy DPT on `data` under `<workdir>/depth/` (resumable); returns it in eval mode."""
    from transformers import DPTForDepthEstimation

    size = data.frames.shape[1]
    if data.frames.shape[1:3] != (size, size):
        raise ValueError(f"frames must be square, got {data.frames.shape[1:3]}")
    torch.manual_seed(SEED)
    model = DPTForDepthEstimation(toy_dpt_config(size))
    trainer, params = component_trainer(
        "depth", workdir, {"depth": model}, settings, weight_decay=1e-4
    )

    def step(i: int) -> float:
        rng = batch_rng(SEED, i)
        idx = np.sort(rng.integers(0, len(data), settings.batch))
        x = to_pixels(data.frames[idx])
        d = torch.from_numpy(data.disparity[idx].astype(np.float32))
        if rng.random() < 0.5:
            x, d = x.flip(-1), d.flip(-1)
        pred = model(pixel_values=x).predicted_depth
        return optimise(trainer.opt, depth_loss(pred, d), params)

    trainer.run(step)  # a finished run: its final weights, loaded
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict_depth(model: Any, frames: np.ndarray, batch: int = 32) -> np.ndarray:
    """Raw predicted depth (float32 [N,h,w]) for uint8 frames at the model's input size."""
    model.eval()
    return np.concatenate(
        [
            model(pixel_values=to_pixels(frames[i : i + batch])).predicted_depth.numpy()
            for i in range(0, len(frames), batch)
        ]
    )


def ordinal_accuracy(
    pred: np.ndarray, disparity: np.ndarray, pairs: int = 2000, min_ratio: float = ORDINAL_MIN_RATIO, seed: int = 0
) -> float:
    """Fraction of random pixel pairs whose depth order the prediction gets right.

    Per frame, `pairs` pixel pairs (p, q) are drawn uniformly (seeded) over the whole frame, object and
    background pixels alike. A pair counts only when the true disparities differ by more than `min_ratio`
    of the larger one (|d_p - d_q| > min_ratio * max(d_p, d_q); 5% by default: pairs at nearly equal depth
    have no meaningful order). A counted pair is right when sign(pred_p - pred_q) = sign(d_p - d_q)
    (ties in the prediction count as wrong). `pred` is resized (bilinear) to the disparity's grid first.
    Returns right / counted over all frames.
    """
    pred = np.asarray(pred, np.float32)
    disparity = np.asarray(disparity, np.float32)
    if pred.shape[1:] != disparity.shape[1:]:
        t = torch.nn.functional.interpolate(
            torch.from_numpy(pred)[:, None], size=disparity.shape[1:], mode="bilinear", align_corners=False
        )
        pred = t[:, 0].numpy()
    rng = np.random.default_rng(seed)
    n, h, w = disparity.shape
    right = counted = 0
    for k in range(n):
        p = rng.integers(0, h * w, pairs)
        q = rng.integers(0, h * w, pairs)
        d, e = disparity[k].ravel(), pred[k].ravel()
        keep = np.abs(d[p] - d[q]) > min_ratio * np.maximum(d[p], d[q])
        truth = np.sign(d[p] - d[q])[keep]
        guess = np.sign(e[p] - e[q])[keep]
        right += int((truth == guess).sum())
        counted += int(keep.sum())
    return right / max(1, counted)


def evaluate_depth(model: Any, heldout: FrameSet) -> dict[str, float]:
    """Held-out figures: ordinal accuracy (see `ordinal_accuracy`), the loss, and the per-frame Pearson
    correlation of prediction and true disparity (mean over frames)."""
    pred = predict_depth(model, heldout.frames)
    disp = heldout.disparity.astype(np.float32)
    loss = float(depth_loss(torch.from_numpy(pred), torch.from_numpy(disp)))
    corr = [float(np.corrcoef(p.ravel(), d.ravel())[0, 1]) for p, d in zip(pred, disp, strict=True)]
    return {
        "ordinal_accuracy": ordinal_accuracy(pred, disp),
        "loss": loss,
        "pearson": float(np.nanmean(corr)),
        "frames": len(heldout),
    }


def save_depth(
    model: Any, processor: dict[str, Any] | None, folder: str | os.PathLike, dtype: torch.dtype | None = None
) -> Path:
    """Write `<folder>/depth_estimator/` (config.json with the published Intel/dpt-hybrid-midas keys,
    model.safetensors) and `<folder>/feature_extractor/preprocessor_config.json` (the published
    DPTImageProcessor config at the model's input size, or `processor`, a config dict, when given): the two
    sub-folders of stable-diffusion-2-depth that `DepthEstimator.from_model(folder)` reads. The writing is
    `fixtures.published`'s (`write_sd2_depth_folder` writes the same two, with the other components)."""
    from fixtures.published import dpt_hybrid_midas_config, dpt_preprocessor_config, dump_json, save_transformers

    folder = Path(folder)
    save_transformers(model, folder / "depth_estimator", dpt_hybrid_midas_config(), dtype)
    cfg = processor if processor is not None else dpt_preprocessor_config(int(model.config.image_size))
    dump_json(folder / "feature_extractor" / "preprocessor_config.json", cfg)
    return folder
