"""The toy world's texture reader: which texture kind (plain, striped, dotted, checkered) an object
shows, read from its pixels inside its true mask. A measuring instrument, like the hue test of
`world.colour_of`, for what a hue cannot tell; trained here on ground-truth renderings (and the toy
VAE's reconstructions of them, so that it reads decoded pictures as well as rendered ones).

Input: the object's square box (20 % margin) resized to 48x48, RGB with the pixels outside the mask
set to mid-grey, plus the mask as a fourth channel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toyworld.data import FrameSet
from toyworld.trainer import TrainSettings, batch_rng, component_trainer, optimise
from toyworld.world import TEXTURES

SEED = 41
SETTINGS = TrainSettings(steps=1500, batch=64, lr=2e-3)
CROP = 48
WIDTH = 32
MIN_PIXELS = 150  # objects with fewer visible pixels are not read


class TextureReader(nn.Module):
    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(4, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * w, len(TEXTURES)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def crops(frames: np.ndarray, masks: np.ndarray, margins: np.ndarray | float = 0.2) -> torch.Tensor:
    """(N, 4, CROP, CROP) float32: each object's square box (with its margin), RGB in [-1, 1] set to 0
    outside the mask, and the mask; frames (N,H,W,3) uint8, masks (N,H,W) bool, in one batched resample."""
    n, h, w = masks.shape
    margins = np.broadcast_to(np.asarray(margins, np.float32), (n,))
    theta = np.zeros((n, 2, 3), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 * (1 + margins[i]) + 1
        theta[i] = [[half / (w / 2), 0, (cx + 0.5) / (w / 2) - 1], [0, half / (h / 2), (cy + 0.5) / (h / 2) - 1]]
    img = torch.from_numpy(np.concatenate([frames.astype(np.float32) / 127.5 - 1, masks[..., None]], -1))
    img[..., :3] *= img[..., 3:]
    grid = F.affine_grid(torch.from_numpy(theta), (n, 4, CROP, CROP), align_corners=False)
    return F.grid_sample(img.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def object_textures(data: FrameSet) -> list[list[str]]:
    """Per frame, the texture kind of object 0, 1, ..."""
    return data.textures


def _samples(ids: np.ndarray, textures: list[list[str]]) -> list[tuple[int, int, int]]:
    """(frame, object, label) for every object with at least MIN_PIXELS visible pixels."""
    out = []
    for f in range(len(ids)):
        for j, tex in enumerate(textures[f]):
            if (ids[f] == j).sum() >= MIN_PIXELS:
                out.append((f, j, TEXTURES.index(tex)))
    return out


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of the RGB channels of a batch (N, 4, H, W); the mask channel is kept."""
    if sigma < 0.3:
        return x
    r = int(np.ceil(2 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    rgb = F.conv2d(F.pad(x[:, :3], (r, r, 0, 0), mode="replicate"), k, groups=3)
    rgb = F.conv2d(F.pad(rgb, (0, 0, r, r), mode="replicate"), k.transpose(-1, -2), groups=3)
    return torch.cat([rgb, x[:, 3:]], 1)


BLURS = (0.0, 0.5, 0.9, 1.3)  # decoded pictures are softer than rendered ones


def _batch(frames, ids, samples, pick, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented crops: margin, blur, gain, offset, noise, mirror; labels."""
    f = np.array([samples[n][0] for n in pick])
    masks = ids[f] == np.array([samples[n][1] for n in pick])[:, None, None]
    x = crops(frames[f], masks, rng.uniform(0.05, 0.4, len(pick)).astype(np.float32))
    # a blur level per quarter of the batch: four batched convolutions instead of one per crop
    level = rng.integers(0, len(BLURS), len(pick))
    for k, sigma in enumerate(BLURS):
        sel = torch.from_numpy(level == k)
        if sel.any():
            x[sel] = _blur(x[sel], sigma)
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, len(pick)).astype(np.float32)).view(-1, 1, 1, 1)
    offset = torch.from_numpy(rng.uniform(-0.1, 0.1, len(pick)).astype(np.float32)).view(-1, 1, 1, 1)
    noise = torch.from_numpy(rng.uniform(0, 0.05, len(pick)).astype(np.float32)).view(-1, 1, 1, 1)
    x[:, :3] = (x[:, :3] * gain + offset + torch.randn(x[:, :3].shape, generator=g) * noise) * x[:, 3:]
    flip = torch.from_numpy(rng.random(len(pick)) < 0.5)
    x[flip] = x[flip].flip(-1)
    return x, torch.tensor([samples[n][2] for n in pick])


def train_texture(data: FrameSet, workdir: str | os.PathLike, settings: TrainSettings = SETTINGS) -> TextureReader:
    """Train the texture reader on ground-truth object crops under `<workdir>/texture/` (resumable)."""
    torch.manual_seed(SEED)
    model = TextureReader()
    trainer, params = component_trainer("texture", workdir, {"texture": model}, settings, weight_decay=0.01)
    if trainer.finished():
        return model.eval().requires_grad_(False)
    samples = _samples(data.ids, object_textures(data))

    def step(i: int) -> float:
        rng = batch_rng(SEED, i)
        x, y = _batch(data.frames, data.ids, samples, rng.integers(0, len(samples), settings.batch), rng)
        return optimise(trainer.opt, F.cross_entropy(model(x), y), params)

    trainer.run(step)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def evaluate_texture(model: TextureReader, heldout: FrameSet) -> dict[str, float]:
    """Accuracy on held-out ground-truth object crops (every visible object of every frame). `train-toy`
    looks it up by name (toyworld/build.py: `evaluate_<part>`)."""
    samples = _samples(heldout.ids, object_textures(heldout))
    hits = 0
    for start in range(0, len(samples), 256):
        chunk = samples[start : start + 256]
        f = np.array([c[0] for c in chunk])
        x = crops(heldout.frames[f], heldout.ids[f] == np.array([c[1] for c in chunk])[:, None, None])
        hits += int((model(x).argmax(1) == torch.tensor([label for _, _, label in chunk])).sum())
    return {"objects": len(samples), "accuracy": hits / max(len(samples), 1)}


def save_reader(model: TextureReader, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"width": WIDTH, "crop": CROP, "labels": list(TEXTURES)}, indent=2))


def find_reader(model_folder: str | os.PathLike) -> TextureReader | None:
    """The texture reader saved in a toy model folder's `texture/`, or None when it has none (a hub id,
    the tiny models)."""
    folder = Path(model_folder) / "texture"
    return load_reader(folder) if (folder / "model.safetensors").exists() else None


def load_reader(folder: str | os.PathLike) -> TextureReader:
    """The reader saved by `save_reader` (or a trained run's checkpoint folder), float32, eval mode."""
    folder = Path(folder)
    model = TextureReader()
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        state = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}
    else:
        state = torch.load(folder / "ckpt.pt", map_location="cpu", weights_only=False)["modules"]["texture"]
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def read_textures(model: TextureReader, frames: np.ndarray, masks: np.ndarray) -> list[str | None]:
    """The texture kind of the masked object in each frame (None where it shows < MIN_PIXELS)."""
    out: list[str | None] = [None] * len(frames)
    keep = [t for t in range(len(frames)) if masks[t].sum() >= MIN_PIXELS]
    if keep:
        x = crops(frames[keep], masks[keep])
        for t, k in zip(keep, model(x).argmax(1).tolist(), strict=True):
            out[t] = TEXTURES[k]
    return out
