"""Masked (local) edits: blended latent diffusion (Avrahami et al., 2023) on Pix2Video's steps.

Inside the mask the edit, outside it the input, in two places (docs/METHOD.md, "Masked edits"):

1. In the latent, at every denoising step: after the DDIM step and the latent update, the latent
   outside a feathered latent-size mask is replaced by the DDIM inversion's latent at the same noise
   level (`blend_latents`). The inversion computes that trajectory anyway; the editor keeps it for
   masked videos only (`trajectory_index` says which inversion latent matches which denoising step).
2. In pixels, at the end: the decoded frame over the input frame with the feathered pixel mask
   (`composite`), so pixels farther than the feather from the mask are the input's, exactly.

Feathering grows the mask outwards only: every masked pixel (or latent cell) keeps weight 1, and the
weight falls linearly to 0 over `width` pixels (cells) outside it, in the Chebyshev distance
(`feather`), so the edit is never cut inside the mask and the input is untouched beyond the feather.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

LATENT_FEATHER = 1  # latent cells the latent mask is feathered outwards by (one cell = f pixels)


def feather(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Soft mask [N,1,H,W] float from a binary one: 1 on the mask, (width + 1 − d)/(width + 1) at
    Chebyshev distance d ≤ width outside it, 0 farther. The mean of the mask dilated by 0 … width."""
    m = mask.float()
    if width <= 0:
        return m
    out = m.clone()
    for r in range(1, width + 1):
        out += F.max_pool2d(m, kernel_size=2 * r + 1, stride=1, padding=r)
    return out / (width + 1)


def latent_mask(mask: np.ndarray | torch.Tensor, vae_factor: int, width: int = LATENT_FEATHER) -> torch.Tensor:
    """bool [N,H,W] pixel mask -> [N,1,H/f,W/f] float: a latent cell is in the mask when any of its
    f x f pixels is (the VAE's receptive field spreads a pixel over its cell), then feathered by
    `width` cells."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[:, None]
    cover = F.max_pool2d(m, kernel_size=vae_factor, stride=vae_factor)
    return feather(cover, width)


def pixel_mask(mask: np.ndarray | torch.Tensor, width: int) -> np.ndarray:
    """bool [N,H,W] -> float32 [N,H,W] in [0,1]: the mask feathered by `width` pixels."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[:, None]
    return feather(m, width)[:, 0].numpy()


def trajectory_index(steps: int, step: int) -> int:
    """Which recorded inversion latent matches the latent after denoising step `step` (of `steps`).

    The inversion (docs/METHOD.md, step 3) walks z0 up: after its step m the latent sits at timestep
    m·Δ. Denoising step k moves from τ_k = (S−1−k)·Δ to (S−2−k)·Δ, the level inversion step S−2−k
    reached; the last step lands at the clean latent z0 (both schedules read ᾱ(t < 0) as ᾱ(0)).
    Recorded as `trajectory[:, 0] = z0, trajectory[:, m + 1] = z after inversion step m` (m ≤ S−2),
    denoising step k's match is `trajectory[:, S − 1 − k]`."""
    return steps - 1 - step


def blend_latents(z: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """m·z + (1 − m)·background: the edit inside the (soft) mask, the inversion's latent outside."""
    return mask * z + (1 - mask) * background


def composite(edited: Iterable[np.ndarray], frames: np.ndarray, mask: np.ndarray) -> Iterator[np.ndarray]:
    """Each edited frame (uint8 [H,W,3]) over the input frame with the soft pixel mask [N,H,W]:
    round(m·edit + (1 − m)·input); where m is 0 the input's pixels come back unchanged."""
    for i, out in enumerate(edited):
        m = mask[i][..., None]
        if not m.any():
            yield frames[i].copy()
            continue
        mixed = m * out.astype(np.float32) + (1 - m) * frames[i].astype(np.float32)
        yield np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
