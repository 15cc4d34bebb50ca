"""The toy VAE: SD's AutoencoderKL (4 latent channels) at toy widths with three blocks instead of four,
so its scale factor is 4 (a 32x32 latent for a 128x128 frame; the editor reads the factor from the
config, as diffusers does), trained on toy frames.

Loss: L1 + MSE of the reconstruction from the posterior mean plus a small KL term (SD's VAE also has a
perceptual and an adversarial term; the toy world's flat colours and hard edges do not need them).
After training the latent space is rescaled exactly (encoder mean ×c, decoder input ×1/c) so that
latents times the published scaling factor 0.18215 have unit variance, as SD2's do: the config then
keeps diffusers' default and no `scaling_factor` key, like the published one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from toyworld.data import FrameSet
from toyworld.trainer import Trainer, batch_rng, optimise

SCALING_FACTOR = 0.18215  # diffusers' default, which SD2's vae/config.json relies on
SEED = 11
STEPS = 3000  # the joint phase
DECODER_STEPS = 600  # the decoder alone (the committed VAE: +0.46 dB on held-out frames in these 600 steps)


def toy_vae_config() -> dict[str, Any]:
    from fixtures.published import sd2_vae_config

    cfg = {k: v for k, v in sd2_vae_config().items() if not k.startswith("_") and k != "scaling_factor"}
    # Three blocks: two downsamplings, a latent 4x smaller than the frame (32x32 for 128x128 frames), so
    # that a texture's period spans at least two latent cells.
    cfg.update(
        block_out_channels=[32, 64, 128],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=128,
    )
    return cfg


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(data: FrameSet, workdir: str | os.PathLike, steps: int = STEPS, batch: int = 8, crop: int = 64) -> Any:
    """Trained on random crops (the VAE is convolutional; crops cost a quarter of whole frames)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    vae = AutoencoderKL(**toy_vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    trainer = Trainer("vae", workdir, {"vae": vae}, opt, steps, lr_warmup=100)

    def step(i: int) -> float:
        rng = batch_rng(SEED, i)
        idx = rng.integers(0, len(data), batch)
        y, x0 = rng.integers(0, data.frames.shape[1] - crop + 1, 2)
        x = to_tensor(data.frames[idx, y : y + crop, x0 : x0 + crop])
        if rng.random() < 0.5:
            x = x.flip(-1)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mean).sample
        kl = post.kl().mean() / x[0].numel()
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + 1e-4 * kl
        return optimise(opt, loss, vae.parameters())

    trainer.run(step)
    vae.eval()
    if not (trainer.dir / "rescaled").exists():
        rescale_latents(vae, data)
        trainer.save(steps)
        (trainer.dir / "rescaled").write_text("ok\n")
    vae.requires_grad_(False)
    return vae


def finetune_decoder(
    vae: Any, data: FrameSet, workdir: str | os.PathLike, steps: int = DECODER_STEPS, batch: int = 4, crop: int = 128
) -> Any:
    """Second phase: the decoder alone, with the encoder frozen, on whole frames (the mid-block attention
    then sees as many tokens as it will when editing). The latents do not move, so the UNet can train on
    them meanwhile; only the reconstructions get sharper."""
    decoder = [vae.decoder, vae.post_quant_conv]
    params = [p for m in decoder for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.0)
    trainer = Trainer("vae-decoder", workdir, {"vae": vae}, opt, steps, lr_warmup=50)

    def step(i: int) -> float:
        rng = batch_rng(SEED + 1, i)
        idx = rng.integers(0, len(data), batch)
        y, x0 = rng.integers(0, data.frames.shape[1] - crop + 1, 2)
        x = to_tensor(data.frames[idx, y : y + crop, x0 : x0 + crop])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean()
        return optimise(opt, loss, params)

    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    trainer.run(step)
    vae.eval()
    vae.requires_grad_(False)
    return vae


@torch.no_grad()
def rescale_latents(vae: Any, data: FrameSet, n: int = 256) -> float:
    """Scale the latent space so that std(mean latent) * SCALING_FACTOR = 1; returns the factor."""
    idx = np.linspace(0, len(data) - 1, min(n, len(data))).astype(int)
    means = torch.cat(
        [vae.encode(to_tensor(data.frames[idx[i : i + 32]])).latent_dist.mean for i in range(0, len(idx), 32)]
    )
    c = float(1.0 / (SCALING_FACTOR * means.std()))
    lat = vae.config.latent_channels
    vae.quant_conv.weight[:lat] *= c  # the mean half of (mean, logvar)
    vae.quant_conv.bias[:lat] *= c
    vae.quant_conv.bias[lat:] += 2 * float(np.log(c))  # the variance scales with c²
    vae.post_quant_conv.weight /= c
    return c


@torch.no_grad()
def encode(vae: Any, frames: np.ndarray, batch: int = 32) -> torch.Tensor:
    """Scaled latents (posterior mean × 0.18215), as the editor computes them."""
    out = [vae.encode(to_tensor(frames[i : i + batch])).latent_dist.mean for i in range(0, len(frames), batch)]
    return torch.cat(out) * SCALING_FACTOR


@torch.no_grad()
def psnr(vae: Any, frames: np.ndarray) -> float:
    """Mean PSNR (dB) of uint8 reconstructions, decoded as the editor decodes (truncation)."""
    out = []
    for i in range(0, len(frames), 16):
        x = to_tensor(frames[i : i + 16])
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        img = torch.floor((rec + 1) / 2 * 255).permute(0, 2, 3, 1).numpy()
        mse = ((img - frames[i : i + 16].astype(np.float32)) ** 2).reshape(len(img), -1).mean(1)
        out += list(10 * np.log10(255.0**2 / np.maximum(mse, 1e-6)))
    return float(np.mean(out))
