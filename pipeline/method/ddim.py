"""DDIM as the Pix2Video reference runs it (docs/METHOD.md, "The scheduler").

The constants are fixed here rather than read from the checkpoint's scheduler config: that config says
`steps_offset: 1` and names PNDM, while the reference uses DDIM with offset 0 and
`set_alpha_to_one=False`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012


def alphas_cumprod() -> torch.Tensor:
    """ᾱ(t) for t = 0..999, `scaled_linear` betas, float32 as diffusers computes them."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, TRAIN_TIMESTEPS, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class DDIMSchedule:
    """Timesteps and ᾱ lookups for `steps` inference steps."""

    steps: int
    alphas: torch.Tensor  # ᾱ(0..999), float32, on CPU

    @classmethod
    def create(cls, steps: int) -> DDIMSchedule:
        if not 1 <= steps <= TRAIN_TIMESTEPS:
            raise ValueError(f"steps must be between 1 and {TRAIN_TIMESTEPS}, got {steps}")
        return cls(steps=steps, alphas=alphas_cumprod())

    @property
    def delta(self) -> int:
        return TRAIN_TIMESTEPS // self.steps

    def denoise_timestep(self, k: int) -> int:
        """τ_k = (S-1-k)·Δ: 980, 960, …, 0 for S = 50."""
        return (self.steps - 1 - k) * self.delta

    def invert_timestep(self, k: int) -> int:
        """k·Δ: 0, 20, …, 980 for S = 50."""
        return k * self.delta

    def alpha(self, t: torch.Tensor | int) -> torch.Tensor:
        """ᾱ(t), with ᾱ(t) = ᾱ(0) for t < 0 (`set_alpha_to_one=False`)."""
        t = torch.as_tensor(t, dtype=torch.long)
        return self.alphas[t.clamp(min=0)]


def ddim_step(
    z: torch.Tensor, eps: torch.Tensor, alpha_from: torch.Tensor, alpha_to: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM move from ᾱ = alpha_from to ᾱ = alpha_to; returns (new z, x̂0).

    Used in both directions: inversion passes (ᾱ(t-Δ), ᾱ(t)), denoising (ᾱ(t), ᾱ(t-Δ)).
    Alphas broadcast per sample (shape [B,1,1,1]) so a batch may mix timesteps.
    """
    x0 = (z - (1 - alpha_from).sqrt() * eps) / alpha_from.sqrt()
    return alpha_to.sqrt() * x0 + (1 - alpha_to).sqrt() * eps, x0
