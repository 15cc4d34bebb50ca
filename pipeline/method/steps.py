"""The method's small named steps, shared by the plain loop (`reference.py`) and the batched engine
(`engine.py`), so both spell the algorithm the same way (docs/METHOD.md; what each injection variant
attends to is `sources.py`):

- `classifier_free_guidance`: ε = ε_u + g·(ε_c − ε_u);
- `latent_update`: z ← z − λ·(2/n_ref)·(x̂0 − x̂0_prev), n_ref = SD2's latent element count at 512²;

and the steps beyond the paper (docs/METHOD.md, "Beyond the paper"), off by default:

- `warp_latent`: the previous frame's x̂0 resampled along the input clip's flow (`pipeline.io.flow`);
- `latent_update(..., valid=m)`: the update towards the warped x̂0_prev, weighted by the flow's validity;
- `flow_fusion`: at late steps, x̂0 pulled towards the warped previous x̂0 where the flow is valid.

The DDIM move itself is `ddim.ddim_step`.
"""

from __future__ import annotations

import torch

# n_ref: the element count of one frame's latent in SD2 at 512² (4 channels x 64 x 64), where the
# published λ = 100 was set. The published step divides by the latent's own count n, so the same λ
# pulled 16x harder at 16x16 latents and 1.5x softer at 768x512; dividing by n_ref instead keeps the
# per-element step of the published setting at every size, and equals it exactly at 64x64.
REFERENCE_LATENT_ELEMENTS = 4 * 64 * 64

def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε = ε_u + g·(ε_c − ε_u): the unconditional prediction pushed towards the prompt's by `scale`."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def latent_update(
    z: torch.Tensor,
    x0: torch.Tensor,
    x0_prev: torch.Tensor,
    weight: float,
    where: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The latent update (the paper's "guidance"): z − λ·(2/n_ref)·(x̂0 − x̂0_prev).

    `z`, `x0`, `x0_prev`: [B,C,h,w], one frame per row (`x0_prev` is the previous frame's x̂0 at the
    same step). The published code moves z by the gradient of λ·mean((x̂0 − x̂0_prev)²) with respect to
    x̂0, λ·(2/n)·(x̂0 − x̂0_prev) with n = C·h·w; here n is `REFERENCE_LATENT_ELEMENTS` whatever the
    size: bit for bit the published step at SD2's 64x64 latents, the same per-element step at any other.
    `where` ([B] bool): the rows that get the update; the others come back unchanged.
    `valid` ([B,1,h,w] in [0, 1], beyond the paper): the step is scaled by it per cell (the flow-aware
    update: `x0_prev` warped along the flow, nothing pulled where the flow fails); None: the paper's.
    """
    difference = x0 - x0_prev
    if valid is not None:
        difference = valid * difference
    moved = z - weight * (2.0 / REFERENCE_LATENT_ELEMENTS) * difference
    if where is None:
        return moved
    return torch.where(where.view(-1, *([1] * (z.dim() - 1))), moved, z)


def warp_latent(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(p) = x(p + flow(p)), bilinear, the border repeated outside.

    `x` [B,C,h,w]; `flow` [B,≥2,h,w], its first two channels (dx, dy) in latent cells (`pipeline.io.flow`:
    frame i's flow towards the frame edited before it, so out is that frame's x̂0 moved onto frame i)."""
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype, device=flow.device),
        torch.arange(w, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    # grid_sample's coordinates with align_corners=False: cell centre c maps to (2c + 1)/size − 1.
    gx = (2 * (xs + flow[:, 0]) + 1) / w - 1
    gy = (2 * (ys + flow[:, 1]) + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def flow_fusion(
    z: torch.Tensor,
    x0: torch.Tensor,
    x0_warped: torch.Tensor,
    valid: torch.Tensor,
    weight: float,
    sqrt_alpha_next: torch.Tensor,
    tolerance: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fusion beyond the paper (Rerender's idea, in the latent): x̂0 ← x̂0 − β·m·(x̂0 − warp(x̂0_prev)),
    and z moved as the DDIM step would have moved it from that x̂0 with the same ε,
    z ← z − √ᾱ_next·β·m·(x̂0 − warp(x̂0_prev)). Returns (z, x̂0). `valid` m [B,1,h,w]; `sqrt_alpha_next`
    √ᾱ of the timestep z is at, broadcastable to z.

    `tolerance` τ > 0 gates the pull by agreement: m·exp(−(d/τ)²), d the channels' mean |x̂0 − warp(x̂0_prev)|
    per cell. Flicker is a small difference; a large one is content that moved other than the flow says
    (an edge, a disocclusion the mask missed), where pulling drags the previous frame's picture along."""
    diff = x0 - x0_warped
    gate = valid
    if tolerance > 0:
        gate = valid * torch.exp(-((diff.abs().mean(dim=1, keepdim=True) / tolerance) ** 2))
    moved = weight * gate * diff
    return z - sqrt_alpha_next * moved, x0 - moved
