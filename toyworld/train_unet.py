"""The toy SD2-depth: UNet (SD2-depth topology, 5 input channels, nine decoder self-attention layers)
and CLIP text encoder at toy widths, trained together as a depth- and text-conditioned latent
diffusion model on the toy VAE's latents (32x32 for 128x128 frames).

Everything the editor relies on is the published model's: epsilon prediction, DDIM's 1000-step
`scaled_linear` schedule (0.00085 to 0.012), the depth channel resized bicubically to the latent and
min-max normalised to [-1, 1] (`pipeline.method.editor.depth_conditioning`), the text encoder's
`last_hidden_state` over all 77 padded positions from input ids alone. A tenth of the captions are
dropped to "" during training so that classifier-free guidance with the empty negative prompt works.

Two training choices buy convergence on a CPU budget: the loss is weighted per timestep by
min(SNR, 5) / SNR (Hang et al., "Efficient Diffusion Training via Min-SNR Weighting", 2023), and the
weights written out are an exponential moving average of the trained ones (decay 0.999).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toyworld.data import FrameSet
from toyworld.trainer import Trainer, batch_rng, optimise

# The committed UNet's run was shortened twice to fit its session: steps 0-3,000 ran under an 8,000-step
# cosine schedule, 3,000-3,600 under a 6,000-step one, 3,600-4,400 under 5,600, the rest under this one
# (BENCHMARKS.md, the toy world).
STEPS = 5200
SEED = 12
TEXT_HIDDEN = 64
CAPTION_DROPOUT = 0.1
MIN_SNR_GAMMA = 5.0
EMA_DECAY = 0.999


def toy_unet_config(sample_size: int = 32) -> dict[str, Any]:
    from fixtures.published import sd2_depth_unet_config

    cfg = {k: v for k, v in sd2_depth_unet_config().items() if not k.startswith("_")}
    cfg.update(
        block_out_channels=[32, 64, 96, 96],
        attention_head_dim=[1, 2, 3, 3],  # heads per block, SD2's naming (32 channels per head)
        norm_num_groups=16,
        cross_attention_dim=TEXT_HIDDEN,
        sample_size=sample_size,
    )
    return cfg


def toy_text_config(tokenizer: Any) -> Any:
    from toyworld.tokens import text_tower_config

    return text_tower_config(tokenizer, width=TEXT_HIDDEN, intermediate=4 * TEXT_HIDDEN, hidden_act="gelu")


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def depth_maps(disparity: np.ndarray, latent: int) -> torch.Tensor:
    """Depth conditioning at the latent size (latent x latent), as the editor computes it from the
    frame-size maps."""
    from pipeline.method.editor import depth_conditioning

    return depth_conditioning(list(disparity.astype(np.float32)), latent, latent, vae_factor=1)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def train_unet(
    data: FrameSet,
    latents: torch.Tensor | None,
    tokenizer: Any,
    workdir: str | os.PathLike,
    steps: int = STEPS,
    batch: int = 16,
    sample_size: int = 32,
    on_checkpoint: Any = None,
) -> tuple[Any, Any]:
    """latents: the toy VAE's scaled latents of `data.frames` (N,4,sample_size,sample_size); None
    when the run is finished (the weights are loaded). Returns the EMA (unet, text_encoder)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**toy_unet_config(sample_size))
    text = CLIPTextModel(toy_text_config(tokenizer))
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text)
    for m in (ema_unet, ema_text):
        m.requires_grad_(False)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=4e-4, weight_decay=0.01)
    modules = {"unet": unet, "text_encoder": text, "ema_unet": ema_unet, "ema_text_encoder": ema_text}
    trainer = Trainer("unet", workdir, modules, opt, steps, lr_warmup=200, on_checkpoint=on_checkpoint)
    if trainer.finished():  # the final weights: no latents, depth or tokens to prepare
        return ema_unet.eval(), ema_text.eval()
    depth = torch.cat([depth_maps(data.disparity[i : i + 256], sample_size) for i in range(0, len(data), 256)])
    ids = tokenizer(
        list(data.captions), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    ab = alphas_cumprod()
    snr = ab / (1 - ab)
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr  # epsilon prediction: min(SNR, γ) / SNR

    def step(i: int) -> float:
        rng = batch_rng(SEED, i)
        idx = torch.from_numpy(rng.integers(0, len(data), batch))
        z0 = latents[idx]
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        eps = torch.randn(z0.shape, generator=g)
        t = torch.from_numpy(rng.integers(0, 1000, batch))
        a = ab[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        tok = ids[idx].clone()
        drop = torch.from_numpy(rng.random(batch) < CAPTION_DROPOUT)
        tok[drop] = empty
        e = text(tok)[0]
        pred = unet(torch.cat([zt, depth[idx]], 1), t, encoder_hidden_states=e).sample
        loss = (F.mse_loss(pred, eps, reduction="none").mean((1, 2, 3)) * weight[t]).mean()
        value = optimise(opt, loss, params)
        decay = min(EMA_DECAY, (1 + i) / (10 + i))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text, decay)
        return value

    trainer.run(step)
    for m in (ema_unet, ema_text):
        m.eval()
    return ema_unet, ema_text
