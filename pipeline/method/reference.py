"""Pix2Video as a plain loop, one frame and one step at a time: docs/METHOD.md steps 2-8, in order.

This is the oracle the batched engine (`engine.py`) is tested against. It shares no batching, no
store and no plan with the engine: features live in a dict keyed by (step, branch, layer), and one
UNet call is one frame at one step (both CFG branches). Slow; for tests and for reading.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.io.flow import video_flow

from .ddim import TRAIN_TIMESTEPS, alphas_cumprod
from .injection import decoder_self_attention_names, random_sources
from .sources import ANCHOR, INJECTION_SOURCES, PREVIOUS, RANDOM_EARLIER
from .step_cache import StepCache
from .steps import classifier_free_guidance, flow_fusion, latent_update, warp_latent

if TYPE_CHECKING:
    from pipeline.models.loading import DiffusionModels

    from .config import EditConfig

Features = dict[tuple[int, int, int], torch.Tensor]  # (step, branch, layer) -> the layer's input tokens


class _Injection:
    """Decoder self-attention for one layer: records its input, and attends to `sources` if any.

    Q = W_q·h; K, V = W_k, W_v · concat_tokens(sources[(step, branch, layer)]); ordinary attention
    when there are no sources. Written out (softmax, not SDPA) so it shares nothing with the engine.
    """

    def __init__(self, state: dict, layer: int) -> None:
        self.state, self.layer = state, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        rows = []
        for branch, h in enumerate(hidden_states.split(1)):
            key = (self.state["step"], branch, self.layer)
            self.state["record"][key] = h.clone()
            context = torch.cat([src[key] for src in self.state["sources"]], dim=1) if self.state["sources"] else h
            q, k, v = attn.to_q(h), attn.to_k(context), attn.to_v(context)
            heads = lambda x: x.view(1, x.shape[1], attn.heads, -1).transpose(1, 2)  # noqa: E731
            q, k, v = heads(q), heads(k), heads(v)
            w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
            out = (w @ v).transpose(1, 2).reshape(1, h.shape[1], -1)
            rows.append(attn.to_out[1](attn.to_out[0](out)))
        return torch.cat(rows)


@torch.no_grad()
def reference_edit(
    models: DiffusionModels,
    frames: np.ndarray,
    depth: torch.Tensor,
    source_prompt: str,
    prompts: Sequence[str],
    config: EditConfig,
    video_id: str = "",
    mask: torch.Tensor | None = None,
    flow: np.ndarray | None = None,
) -> list[torch.Tensor]:
    """Final latents [N,4,h,w] per prompt, in frame order. `frames` uint8 [N,H,W,3] at the edit size;
    `depth` the conditioning [N,1,H/f,W/f], f the VAE's scale factor (`editor.depth_conditioning`).
    `mask`: a masked edit's feathered latent mask [N,1,H/f,W/f] (`blend.latent_mask`).
    `flow`: the input's flow [N,6,H/f,W/f] (`pipeline.io.flow.video_flow`) for the steps beyond the
    paper; None: estimated here from `frames` when they need it."""
    unet, vae, dev = models.unet, models.vae, models.device
    S, g, lam = config.steps, config.guidance_scale, config.update_weight
    K_u = S // 2 if config.update_last_step is None else config.update_last_step
    # Beyond the paper: the flow fusion at steps F.. (the last `fusion_steps`), the flow-aware update.
    F = S - config.fusion_steps if config.fusion_steps and config.fusion_weight else S
    towards = None
    if (config.flow_update and config.latent_update) or F < S:
        if flow is None and len(frames) > 1:
            factor = 2 ** (len(vae.config.block_out_channels) - 1)
            flow = video_flow(np.asarray(frames), factor)
        # towards the frame edited before: i-1, or i+1 when editing backwards
        towards = None if flow is None else torch.from_numpy(flow[:, 3:6] if config.reverse else flow[:, 0:3]).to(dev)
    delta = TRAIN_TIMESTEPS // S
    alphas = alphas_cumprod()
    abar = lambda t: alphas[max(t, 0)].to(dev)  # noqa: E731 - ᾱ(t) = ᾱ(0) for t < 0
    s = vae.config.scaling_factor
    d = depth.to(dev, unet.dtype)

    def text(p: str) -> torch.Tensor:
        ids = models.tokenizer([p], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return models.text_encoder(ids.input_ids.to(dev))[0].to(unet.dtype)

    # Step caching (step_cache.py): at the steps its schedule skips, the deep blocks' output of the
    # frame's last full step; one frame in flight, so one slot per branch.
    caching = config.inversion_cache().active or config.edit_cache().active
    cache = StepCache.attach(unet) if caching else None

    def eps_of(z, i, t, emb, k=0, schedule=None):
        with cache.step(schedule, k, [("reference", b) for b in range(len(z))]) if cache else contextlib.nullcontext():
            x = torch.cat([z.to(unet.dtype), d[i : i + 1].expand(len(z), -1, -1, -1)], 1)
            return unet(x, t, emb).sample.float()

    state: dict = {"step": 0, "record": {}, "sources": []}
    saved = unet.attn_processors
    layers = {n: i for i, n in enumerate(decoder_self_attention_names(unet))}
    unet.set_attn_processor(
        {k: (_Injection(state, layers[k[: -len(".processor")]]) if k[: -len(".processor")] in layers else p)
         for k, p in saved.items()}
    )
    try:
        # 2. Encoding: the VAE mean of each frame, scaled (the depth comes conditioned, the text below).
        x = torch.from_numpy(np.asarray(frames)).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
        z0 = [vae.encode(x[i : i + 1].to(unet.dtype)).latent_dist.mean.float() * s for i in range(len(x))]

        # 3. DDIM inversion of every frame on its own, source prompt, conditional branch only. A masked
        # edit keeps every level it passes: levels[i][m] is frame i at timestep (m − 1)·Δ (levels[i][0]
        # is z0, "timestep −Δ", read as ᾱ(0)).
        e_src, zT, levels = text(source_prompt), [], []
        for i, z in enumerate(z0):
            levels.append([z])
            for k in range(S):
                t = k * delta
                state.update(step=k, record={}, sources=[])
                eps = eps_of(z, i, t, e_src, k, config.inversion_cache())
                a, b = abar(t - delta), abar(t)
                z = b.sqrt() * (z - (1 - a).sqrt() * eps) / a.sqrt() + (1 - b).sqrt() * eps
                levels[i].append(z)
            zT.append(z)

        e_neg, results = text(config.negative_prompt), []
        for prompt in prompts:
            e = torch.cat([e_neg, text(prompt)])  # branch 0 unconditional, branch 1 conditional
            order = list(range(len(zT)))[:: -1 if config.reverse else 1]
            draws = random_sources(len(order), config.seed, video_id, prompt)
            history: list[Features] = []  # every frame's recorded inputs, by position in edit order
            x0_prev: list[torch.Tensor] = []  # the previous frame's x̂0 at every step
            out = {}
            # 4-5. The anchor (position 0) with ordinary attention, then every later frame in order,
            # attending to its injection sources; every frame's layer inputs are recorded.
            refresh = config.anchor_refresh
            for pos, i in enumerate(order):
                sources = []  # the anchor: ordinary attention
                if pos > 0:
                    # With --anchor-refresh K, the frames after position K·r attend to it as their anchor.
                    anchor = (pos - 1) // refresh * refresh if refresh else 0
                    recorded = {
                        ANCHOR: history[anchor],
                        PREVIOUS: history[pos - 1],
                        RANDOM_EARLIER: history[draws[pos]],
                    }
                    sources = [recorded[name] for name in INJECTION_SOURCES[config.injection]]
                z, feats, x0s = zT[i], {}, []
                for k in range(S):
                    t = (S - 1 - k) * delta
                    state.update(step=k, record=feats, sources=sources)
                    # 6. Classifier-free guidance, then the DDIM step (x̂0, and z at the next timestep).
                    eps_u, eps_c = eps_of(z.expand(2, -1, -1, -1), i, t, e, k, config.edit_cache()).chunk(2)
                    eps = classifier_free_guidance(eps_u, eps_c, g)
                    a, b = abar(t), abar(t - delta)
                    x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
                    z = b.sqrt() * x0 + (1 - b).sqrt() * eps
                    # Beyond the paper: the previous frame's x̂0 moved onto this frame along the input's flow
                    # (no flow: no motion, valid everywhere); the fusion at steps F.. pulls x̂0 towards it.
                    if pos > 0 and (F <= k or config.flow_update):
                        f_i = towards[i : i + 1] if towards is not None else torch.cat(
                            [torch.zeros_like(z[:, :2]), torch.ones_like(z[:, :1])], 1
                        )
                        warped, valid = warp_latent(x0_prev[k], f_i), f_i[:, 2:3]
                    if pos > 0 and F <= k:
                        tol = config.fusion_tolerance
                        z, x0 = flow_fusion(z, x0, warped, valid, config.fusion_weight, b.sqrt(), tol)
                    # 7. The latent update: frames after the anchor, steps 0..K_u.
                    if pos > 0 and config.latent_update and k <= K_u:
                        if config.flow_update:
                            z = latent_update(z, x0, warped, lam, valid=valid)
                        else:
                            z = latent_update(z, x0, x0_prev[k], lam)
                    # Masked edit: outside the mask, the inversion's latent at the timestep just reached,
                    # (S − 2 − k)·Δ, which is levels[i][S − 1 − k] (the last step: z0).
                    if mask is not None:
                        m = mask[i : i + 1].to(dev)
                        z = m * z + (1 - m) * levels[i][S - 1 - k]
                    x0s.append(x0)
                history.append(feats)
                x0_prev = x0s
                out[i] = z[0]
            results.append(torch.stack([out[i] for i in range(len(zT))]))
        return results
    finally:
        unet.set_attn_processor(saved)
        if cache is not None:
            cache.reset()


@torch.no_grad()
def reference_decode(models: DiffusionModels, latents: torch.Tensor) -> np.ndarray:
    """Step 8: x = vae.decode(z / s), clamp to [-1, 1], floor((x + 1) / 2 · 255), one frame at a time."""
    vae = models.vae
    frames = []
    for z in latents:
        x = vae.decode((z[None] / vae.config.scaling_factor).to(vae.dtype)).sample.float().clamp(-1, 1)
        frames.append(((x + 1) / 2 * 255).floor().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy())
    return np.stack(frames)
