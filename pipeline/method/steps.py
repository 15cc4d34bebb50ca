"""The method's small named steps, shared by the plain loop (`reference.py`) and the batched engine
(`engine.py`), so both spell the algorithm the same way (docs/METHOD.md):

- `INJECTION_SOURCES`: which recorded features the frames after the anchor attend to, per variant;
- `classifier_free_guidance`: ε = ε_u + g·(ε_c − ε_u);
- `latent_update`: z ← z − λ·(2/n)·(x̂0 − x̂0_prev), n = one frame's latent element count.

The DDIM move itself is `ddim.ddim_step`.
"""

from __future__ import annotations

import torch

# Names of the recorded features a frame after the anchor can attend to (K and V of its decoder
# self-attention layers, in this order; its own tokens are never among them).
ANCHOR = "anchor"  # the anchor frame's, at the same step and branch
PREVIOUS = "previous"  # the frame edited just before, at the same step and branch (the anchor for frame 1)
RANDOM_EARLIER = "random earlier"  # one earlier frame drawn per frame (`injection.random_sources`)

# The injection variants (paper, Fig. 5 and Table 1): what each one's later frames attend to, in
# K/V order. The first is the method; "none" is per-frame editing (ordinary attention everywhere).
INJECTION_SOURCES: dict[str, tuple[str, ...]] = {
    "anchor+prev": (ANCHOR, PREVIOUS),
    "anchor": (ANCHOR,),
    "prev": (PREVIOUS,),
    "random": (ANCHOR, RANDOM_EARLIER),
    "none": (),
}


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε = ε_u + g·(ε_c − ε_u): the unconditional prediction pushed towards the prompt's by `scale`."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def latent_update(
    z: torch.Tensor,
    x0: torch.Tensor,
    x0_prev: torch.Tensor,
    weight: float,
    where: torch.Tensor | None = None,
) -> torch.Tensor:
    """The latent update (the paper's "guidance"): z − λ·(2/n)·(x̂0 − x̂0_prev).

    `z`, `x0`, `x0_prev`: [B,C,h,w], one frame per row (`x0_prev` is the previous frame's x̂0 at the
    same step); n = C·h·w, one frame's element count. This is the gradient of λ·mean((x̂0 − x̂0_prev)²)
    with respect to x̂0, applied to z, as the published code does. `where` ([B] bool): the rows that
    get the update; the others come back unchanged.
    """
    n = x0[0].numel()
    moved = z - weight * (2.0 / n) * (x0 - x0_prev)
    if where is None:
        return moved
    return torch.where(where.view(-1, *([1] * (z.dim() - 1))), moved, z)
