"""Pix2Video (Ceylan, Huang, Mitra, ICCV 2023), top to bottom as in docs/METHOD.md.

    video = editor.prepare(frames, depth)            # step 2: encode frames, depth conditioning
    zT = editor.invert(video, source_prompt, cfg)    # step 3: DDIM inversion, every frame on its own
    latents = editor.edit(video, zT, prompts, cfg)   # steps 4-7: anchor, then every later frame
    frames = editor.decode(latents[0])               # step 8

`edit` runs all prompts of a video against one inversion; the stepping itself is the batched engine
in `engine.py`, the attention change is the processor in `injection.py`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import InputError
from pipeline.models.sizes import ModelSizes

from .ddim import DDIMSchedule, ddim_step
from .engine import AUTO_SCHEDULE, INJECTIONS, SCHEDULES, DenoiseEngine, EditJob, EngineSettings, StepTrace
from .injection import FeatureStore, install
from .steps import classifier_free_guidance

if TYPE_CHECKING:
    from pipeline.models.loading import DiffusionModels


@dataclass
class EditConfig:
    """Everything that changes an edit's result, plus how it is scheduled (which does not)."""

    steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    injection: str = "anchor+prev"  # anchor+prev | anchor | prev | random | none
    latent_update: bool = True
    update_weight: float = 100.0  # λ: each latent element moves by λ·2/(4·64·64)·(x̂0 - x̂0_prev), at every size
    update_last_step: int | None = None  # K_u; None = steps // 2
    reverse: bool = False  # anchor = last frame, edit backwards
    seed: int = 0  # only the 'random' injection ablation draws anything: from (seed, video id, prompt)
    schedule: str = "auto"  # sequential | wavefront | auto (= wavefront)
    max_batch: int = 8  # wavefront: (frame, step, prompt) items per UNet call
    inversion_batch: int = 8  # frames per UNet call during inversion
    decode_batch: int = 4  # frames per VAE call

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule {self.schedule!r} is not one of: {', '.join(SCHEDULES)}")
        if self.injection not in INJECTIONS:
            raise InputError(f"injection {self.injection!r} is not one of: {', '.join(INJECTIONS)}")
        if not 1 <= self.steps <= 1000:
            raise InputError(f"steps must be between 1 and 1000, got {self.steps}")
        # NaN or inf here turns every latent into NaN: black frames with exit 0.
        for name, example in (("guidance_scale", 7.5), ("update_weight", 100)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InputError(f"--{name.replace('_', '-')} must be a finite number (e.g. {example}), got {value!r}")
        if self.update_last_step is not None and self.update_last_step < -1:
            raise InputError(f"update_last_step must be -1 (never) or a step index, got {self.update_last_step}")
        if self.max_batch < 1 or self.inversion_batch < 1 or self.decode_batch < 1:
            raise InputError("batch sizes must be at least 1")

    def engine_settings(self) -> EngineSettings:
        schedule = AUTO_SCHEDULE if self.schedule == "auto" else self.schedule
        return EngineSettings(
            guidance_scale=self.guidance_scale,
            injection=self.injection,
            latent_update=self.latent_update,
            update_weight=self.update_weight,
            update_last_step=self.steps // 2 if self.update_last_step is None else self.update_last_step,
            max_batch=1 if schedule == "sequential" else self.max_batch,
            seed=self.seed,
        )


@dataclass
class Video:
    """A video ready for the UNet: clean latents and depth conditioning, on the model's device."""

    latents: torch.Tensor  # z0, [N,4,H/f,W/f] float32, f the VAE's scale factor (8 for SD2)
    depth: torch.Tensor  # [N,1,H/f,W/f], min-max normalised to [-1,1] per frame, model dtype
    height: int
    width: int
    id: str = ""  # the video's id: with the prompt, what the 'random' ablation's draws depend on
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return self.latents.shape[0]


def depth_conditioning(
    depth: Sequence[np.ndarray] | torch.Tensor, height: int, width: int, vae_factor: int = 8
) -> torch.Tensor:
    """Raw depth (any resolution, larger = nearer) → [N,1,H/f,W/f] in [-1,1], SD2-depth's convention;
    f = `vae_factor`, the VAE's pixels per latent cell (8 for SD2)."""
    maps = [torch.as_tensor(np.asarray(d, dtype=np.float32)) for d in depth]
    size = (height // vae_factor, width // vae_factor)
    out = []
    for d in maps:
        d = F.interpolate(d[None, None], size=size, mode="bicubic", align_corners=False)
        lo, hi = d.amin(), d.amax()
        # A flat depth map carries no information; mid-grey rather than a division by zero.
        out.append(2.0 * (d - lo) / (hi - lo) - 1.0 if hi > lo else torch.zeros_like(d))
    return torch.cat(out)


class Pix2Video:
    """The editor: holds the models, runs the method. Load once, call for many videos."""

    def __init__(self, models: DiffusionModels) -> None:
        self.models = models
        # The VAE's scale factor and the size multiple, from the loaded modules' configs.
        self.sizes = ModelSizes.from_configs(models.vae.config, models.unet.config)
        self.store = FeatureStore()
        install(models.unet, self.store)
        self.last_engine: DenoiseEngine | None = None  # for statistics: store size, UNet calls

    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def dtype(self) -> torch.dtype:
        return self.models.dtype

    @property
    def scaling_factor(self) -> float:
        return float(self.models.vae.config.scaling_factor)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP `last_hidden_state` over all 77 positions, from input ids alone (no attention mask)."""
        tok = self.models.tokenizer
        ids = tok(list(prompts), padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return self.models.text_encoder(ids.input_ids.to(self.device))[0].to(self.dtype)

    @torch.no_grad()
    def prepare(
        self, frames: np.ndarray, depth: Sequence[np.ndarray] | torch.Tensor, batch: int = 4, *, video_id: str = ""
    ) -> Video:
        """Encode frames (uint8 [N,H,W,3], already at the edit size) with the VAE mean; condition depth.

        `video_id` names the video for the 'random' injection ablation's draws (see `Video.id`)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be a uint8 array [N,H,W,3], got {frames.dtype} {frames.shape}")
        n, height, width, _ = frames.shape
        if n == 0:
            raise InputError("the video has no frames")
        multiple = self.sizes.multiple
        if height % multiple or width % multiple:
            raise InputError(f"frame size {width}x{height}: width and height must be multiples of {multiple}")
        if len(depth) != n:
            raise InputError(f"got {len(depth)} depth maps for {n} frames")
        vae = self.models.vae
        latents = []
        for start in range(0, n, batch):
            x = torch.from_numpy(frames[start : start + batch]).to(self.device).permute(0, 3, 1, 2)
            x = (x.float() / 127.5 - 1.0).to(self.dtype)
            latents.append(vae.encode(x).latent_dist.mean.float() * self.scaling_factor)
        cond = depth_conditioning(depth, height, width, self.sizes.vae_factor).to(self.device, self.dtype)
        return Video(latents=torch.cat(latents), depth=cond, height=height, width=width, id=video_id)

    @torch.no_grad()
    def invert(self, video: Video, source_prompt: str, config: EditConfig) -> torch.Tensor:
        """Step 3: DDIM inversion of each frame with the source prompt, conditional branch only."""
        config.validate()
        key = ("inversion", source_prompt, config.steps)
        if key in video.cache:
            return video.cache[key]
        sched = DDIMSchedule.create(config.steps)
        emb = self.encode_text([source_prompt])
        out = []
        for start in range(0, video.num_frames, config.inversion_batch):
            z = video.latents[start : start + config.inversion_batch].clone()
            depth = video.depth[start : start + config.inversion_batch]
            for k in range(config.steps):
                t = sched.invert_timestep(k)
                eps = self.models.unet(
                    torch.cat([z.to(self.dtype), depth], dim=1), t, emb.expand(z.shape[0], -1, -1)
                ).sample.float()
                z, _ = ddim_step(z, eps, sched.alpha(t - sched.delta).to(z.device), sched.alpha(t).to(z.device))
            out.append(z)
        video.cache[key] = zT = torch.cat(out)
        return zT

    @torch.no_grad()
    def edit(
        self,
        video: Video,
        zT: torch.Tensor,
        prompts: Sequence[str],
        config: EditConfig,
        on_frame_done: Callable[[int, int], None] | None = None,
        trace: Callable[[StepTrace], None] | None = None,
    ) -> list[torch.Tensor]:
        """Steps 4-7 for every prompt: final latents [N,4,h,w] per prompt, in frame order.

        `on_frame_done(prompt_index, frame_index)` is called as each frame finishes; `trace` gets
        every (prompt, frame, step) item's x̂0 and latents (frame = position in edit order).
        """
        callback = None if on_frame_done is None else (lambda _v, p, f: on_frame_done(p, f))
        return self.edit_many([(video, zT, prompts)], config, callback, trace)[0]

    @torch.no_grad()
    def edit_many(
        self,
        videos: Sequence[tuple[Video, torch.Tensor, Sequence[str]]],
        config: EditConfig,
        on_frame_done: Callable[[int, int, int], None] | None = None,
        trace: Callable[[StepTrace], None] | None = None,
    ) -> list[list[torch.Tensor]]:
        """`edit` for several (video, zT, prompts) of one size at once, so that a batching schedule can
        fill UNet calls across videos as well as prompts (short clips). Results per video, per prompt.

        `on_frame_done(video_index, prompt_index, frame_index)`; `trace` numbers jobs across videos.
        """
        config.validate()
        if not videos:
            return []
        sizes = {(v.height, v.width) for v, _, _ in videos}
        if len(sizes) > 1:
            raise InputError(f"videos edited together must share one size, got {sorted(sizes)}")
        uncond = self.encode_text([config.negative_prompt])[0]
        jobs, owner, orders = [], [], []
        for index, (video, zT, prompts) in enumerate(videos):
            if not prompts or any(not p.strip() for p in prompts):
                raise InputError("every target prompt must be a non-empty text")
            n = video.num_frames
            order = (torch.arange(n - 1, -1, -1) if config.reverse else torch.arange(n)).to(zT.device)
            orders.append(order)
            cond = self.encode_text(prompts)
            for p in range(len(prompts)):
                jobs.append(
                    EditJob(zT[order], video.depth[order], cond[p], uncond, video_id=video.id, prompt=prompts[p])
                )
                owner.append((index, p))
        engine = DenoiseEngine(
            self.models.unet, DDIMSchedule.create(config.steps), self.store, config.engine_settings()
        )
        engine.trace = trace
        self.last_engine = engine
        callback = None
        if on_frame_done is not None:
            frame_of = [order.tolist() for order in orders]

            def callback(job: int, position: int) -> None:
                index, p = owner[job]
                on_frame_done(index, p, frame_of[index][position])

        results = engine.run(jobs, callback)
        out: list[list[torch.Tensor]] = [[] for _ in videos]
        for (index, _), z in zip(owner, results, strict=True):
            out[index].append(z[torch.argsort(orders[index])])
        return out

    @torch.no_grad()
    def sdedit(
        self, video: Video, prompts: Sequence[str], config: EditConfig, strength: float = 0.8
    ) -> list[torch.Tensor]:
        """The paper's per-frame baseline: SDEdit (with depth, as SD2-depth's own image-to-image), every
        frame on its own. Each frame's clean latent is noised to the step `strength` gives, with fresh
        Gaussian noise per frame (`sdedit_noise`: from `config.seed`, the video id and the frame index),
        then denoised alone with each target prompt: guidance as configured; no inversion, no feature
        injection, no latent update. Final latents [N,4,h,w] per prompt, in frame order.

        As diffusers' image-to-image pipelines: of S steps the last ⌊S·strength⌋ run, starting at their
        first timestep. Strength 1 starts at τ_0 (980 of 1000: nearly pure noise, the frame survives
        through depth and √ᾱ(τ_0) ≈ 0.08 of its latent); 0 runs nothing and returns the clean latents.
        """
        config.validate()
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
            raise InputError(f"SDEdit strength must be between 0 and 1, got {strength!r}")
        if not prompts or any(not p.strip() for p in prompts):
            raise InputError("every target prompt must be a non-empty text")
        sched = DDIMSchedule.create(config.steps)
        first = config.steps - min(int(config.steps * strength), config.steps)
        if first == config.steps:
            return [video.latents.clone() for _ in prompts]
        # Ordinary attention everywhere: with no plan the injection processors neither read nor record.
        self.store.plan = None
        unet, device, g = self.models.unet, self.device, config.guidance_scale
        branches = 1 if g == 1 else 2  # g = 1: the unconditional branch cancels out
        alpha = sched.alpha(sched.denoise_timestep(first)).to(device)
        noisy = alpha.sqrt() * video.latents + (1 - alpha).sqrt() * sdedit_noise(video, config.seed).to(device)
        uncond, cond = self.encode_text([config.negative_prompt]), self.encode_text(prompts)
        results = []
        for p in range(len(prompts)):
            out = []
            for start in range(0, video.num_frames, config.max_batch):
                z = noisy[start : start + config.max_batch]
                depth = video.depth[start : start + config.max_batch]
                n = z.shape[0]
                emb = [uncond.expand(n, -1, -1), cond[p : p + 1].expand(n, -1, -1)][-branches:]
                emb = torch.cat(emb)
                for k in range(first, config.steps):
                    t = sched.denoise_timestep(k)
                    sample = torch.cat([z.to(self.dtype), depth], dim=1).repeat(branches, 1, 1, 1)
                    eps = unet(sample, t, emb).sample.float()
                    if branches == 2:
                        eps = classifier_free_guidance(*eps.chunk(2), g)
                    z, _ = ddim_step(z, eps, sched.alpha(t).to(device), sched.alpha(t - sched.delta).to(device))
                out.append(z)
            results.append(torch.cat(out))
        return results

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch: int = 4) -> Iterator[np.ndarray]:
        """Step 8: VAE decode, clamp, and truncate to uint8 as the reference does."""
        vae = self.models.vae
        for start in range(0, latents.shape[0], batch):
            z = latents[start : start + batch] / self.scaling_factor
            x = vae.decode(z.to(self.dtype)).sample.float().clamp(-1, 1)
            pixels = ((x + 1) / 2 * 255).floor().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            yield from pixels

    def __call__(
        self,
        frames: np.ndarray,
        depth: Sequence[np.ndarray],
        prompt: str,
        source_prompt: str,
        config: EditConfig | None = None,
    ) -> np.ndarray:
        """One video, one prompt, frames in and frames out (uint8 [N,H,W,3])."""
        config = config or EditConfig()
        video = self.prepare(frames, depth)
        zT = self.invert(video, source_prompt, config)
        (latents,) = self.edit(video, zT, [prompt], config)
        return np.stack(list(self.decode(latents, config.decode_batch)))


def sdedit_noise(video: Video, seed: int) -> torch.Tensor:
    """SDEdit's noise, [N,4,h,w] float32 on the CPU: one Gaussian draw per frame, seeded from (seed, video
    id, frame index) alone, so a frame gets the same noise whatever else is edited with it, on any device."""
    shape = video.latents.shape[1:]
    out = []
    for i in range(video.num_frames):
        # str seeds hash with SHA-512 (stable across runs and machines), as `injection.random_sources`.
        frame_seed = random.Random(f"{seed}\x00{video.id}\x00{i}").getrandbits(63)
        out.append(torch.randn(shape, generator=torch.Generator().manual_seed(frame_seed)))
    return torch.stack(out)
