"""The toy SD2-depth: UNet (SD2-depth topology, 5 input channels, nine decoder self-attention layers)
and CLIP text encoder at toy widths, trained together as a depth- and text-conditioned latent
diffusion model on the toy VAE's latents.

Everything the editor relies on is the published model's: epsilon prediction, DDIM's 1000-step
`scaled_linear` schedule (0.00085 to 0.012), the depth channel resized bicubically to the latent and
min-max normalised to [-1, 1] (`pipeline.method.editor.depth_conditioning`), the text encoder's
`last_hidden_state` over all 77 padded positions from input ids alone. A tenth of the captions are
dropped to "" during training so that classifier-free guidance with the empty negative prompt works.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toyworld.data import FrameSet
from toyworld.trainer import Trainer, batch_rng, optimise

SEED = 12
TEXT_HIDDEN = 64
CAPTION_DROPOUT = 0.1


def toy_unet_config() -> dict[str, Any]:
    from fixtures.tiny import sd2_depth_unet_config

    cfg = {k: v for k, v in sd2_depth_unet_config().items() if not k.startswith("_")}
    cfg.update(
        block_out_channels=[32, 64, 96, 96],
        attention_head_dim=[1, 2, 3, 3],  # heads per block, SD2's naming (32 channels per head)
        norm_num_groups=16,
        cross_attention_dim=TEXT_HIDDEN,
    )
    return cfg


def toy_text_config(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=TEXT_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def depth_maps(disparity: np.ndarray) -> torch.Tensor:
    from pipeline.method.editor import depth_conditioning

    return depth_conditioning(list(disparity.astype(np.float32)), disparity.shape[1], disparity.shape[2])


def train_unet(
    data: FrameSet,
    latents: torch.Tensor,
    tokenizer: Any,
    workdir: str | os.PathLike,
    steps: int = 2500,
    batch: int = 24,
) -> tuple[Any, Any]:
    """latents: the toy VAE's scaled latents of `data.frames` (N,4,h,w). Returns (unet, text_encoder)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**toy_unet_config())
    text = CLIPTextModel(toy_text_config(tokenizer))
    depth = torch.cat([depth_maps(data.disparity[i : i + 256]) for i in range(0, len(data), 256)])
    ids = tokenizer(
        list(data.captions), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    ab = alphas_cumprod()
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=4e-4, weight_decay=0.01)
    trainer = Trainer("unet", workdir, {"unet": unet, "text_encoder": text}, opt, steps, lr_warmup=200)

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
        loss = F.mse_loss(pred, eps)
        return optimise(opt, loss, params)

    trainer.run(step)
    for m in (unet, text):
        m.eval()
        m.requires_grad_(False)
    return unet, text
