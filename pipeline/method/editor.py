"""Pix2Video (Ceylan, Huang, Mitra, ICCV 2023), top to bottom as in docs/METHOD.md.

    video = editor.prepare(frames, depth)            # step 2: encode frames, depth conditioning
    zT = editor.invert(video, source_prompt, cfg)    # step 3: DDIM inversion, every frame on its own
    latents = editor.edit(video, zT, prompts, cfg)   # steps 4-7: anchor, then every later frame
    frames = editor.decode(latents[0])               # step 8

`edit` runs all prompts of a video against one inversion; the stepping itself is the batched engine
in `engine.py`, the attention change is the processor in `injection.py`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import InputError
from pipeline.io.flow import CHANNELS as FLOW_CHANNELS
from pipeline.io.flow import flow_in_order, video_flow
from pipeline.io.shots import shot_ranges
from pipeline.models.sizes import ModelSizes

from .blend import composite, latent_mask, pixel_mask
from .config import EditConfig
from .ddim import DDIMSchedule, ddim_step
from .engine import DenoiseEngine, EditJob, StepTrace
from .injection import FeatureStore, install
from .step_cache import StepCache
from .steps import classifier_free_guidance

if TYPE_CHECKING:
    from pipeline.models.loading import DiffusionModels


@dataclass
class Video:
    """A video ready for the UNet: clean latents and depth conditioning, on the model's device."""

    latents: torch.Tensor  # z0, [N,4,H/f,W/f] float32, f the VAE's scale factor (8 for SD2)
    depth: torch.Tensor  # [N,1,H/f,W/f], min-max normalised to [-1,1] per frame, model dtype
    height: int
    width: int
    id: str = ""  # the video's id: with the prompt, what the 'random' ablation's draws depend on
    cache: dict = field(default_factory=dict, repr=False)
    # Masked edits only: the binary edit mask (bool [N,H,W] at the edit size, white = edit) and the
    # input frames the decoded edit is composited over (the caller's array, not a copy).
    mask: np.ndarray | None = field(default=None, repr=False)
    frames: np.ndarray | None = field(default=None, repr=False)
    # Beyond the paper: the input's flow [N,6,H/f,W/f] float32 on the device (`pipeline.io.flow`), for the
    # flow-aware update and the fusion; None: no motion known (those steps then see none).
    flow: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return self.latents.shape[0]

    def segment(self, start: int, stop: int) -> Video:
        """Frames [start, stop) as a video of their own (a shot): views of the same tensors, a cache
        of its own (its inversion is its own)."""
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"segment [{start}, {stop}) is outside the video's {self.num_frames} frames")
        cut = slice(start, stop)
        return Video(
            latents=self.latents[cut],
            depth=self.depth[cut],
            height=self.height,
            width=self.width,
            id=self.id,
            mask=None if self.mask is None else self.mask[cut],
            frames=None if self.frames is None else self.frames[cut],
            # Only a shot's first frame looks back across the cut, and only its last forward: the anchors,
            # which never read the flow.
            flow=None if self.flow is None else self.flow[cut],
        )

    def trajectory_of(self, zT: torch.Tensor) -> torch.Tensor | None:
        """The inversion trajectory recorded with `zT` (masked videos; see `Pix2Video.invert`), or None."""
        for key, value in self.cache.items():
            if key[0] == "inversion" and value is zT:
                return self.cache.get(("trajectory", *key[1:]))
        return None


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
        self,
        frames: np.ndarray,
        depth: Sequence[np.ndarray] | torch.Tensor,
        batch: int = 4,
        *,
        video_id: str = "",
        mask: np.ndarray | None = None,
        flow: np.ndarray | None = None,
        estimate_flow: bool = True,
    ) -> Video:
        """Encode frames (uint8 [N,H,W,3], already at the edit size) with the VAE mean; condition depth.

        `video_id` names the video for the 'random' injection ablation's draws (see `Video.id`).
        `mask` (bool [N,H,W] at the edit size, True = edit; `pipeline.io.masks.read_mask`) makes every
        edit of this video a masked one (`blend.py`): its inversion then keeps its trajectory.
        `flow`: the input's flow at the latent size (`pipeline.io.flow.video_flow`, as the precompute
        stage stores it) for the steps beyond the paper; None: estimated here from the frames (DIS,
        milliseconds a frame; nothing for one frame), unless `estimate_flow` is False (edits with those
        steps off, which never read it)."""
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
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (n, height, width):
                raise InputError(f"the mask is {mask.shape} but the frames are {(n, height, width)}; one per frame")
        vae = self.models.vae
        latents = []
        for start in range(0, n, batch):
            x = torch.from_numpy(frames[start : start + batch]).to(self.device).permute(0, 3, 1, 2)
            x = (x.float() / 127.5 - 1.0).to(self.dtype)
            latents.append(vae.encode(x).latent_dist.mean.float() * self.scaling_factor)
        cond = depth_conditioning(depth, height, width, self.sizes.vae_factor).to(self.device, self.dtype)
        factor = self.sizes.vae_factor
        if flow is None and n > 1 and estimate_flow:
            flow = video_flow(frames, factor)
        if flow is not None:
            flow = np.asarray(flow, dtype=np.float32)
            want = (n, FLOW_CHANNELS, height // factor, width // factor)
            if flow.shape != want or not np.isfinite(flow).all():
                raise InputError(f"the flow is {flow.shape} (or not finite) but the video needs finite {want}")
        return Video(
            latents=torch.cat(latents),
            depth=cond,
            height=height,
            width=width,
            id=video_id,
            mask=mask,
            frames=frames if mask is not None else None,
            flow=None if flow is None else torch.from_numpy(flow).to(self.device),
        )

    @torch.no_grad()
    def invert(self, video: Video, source_prompt: str, config: EditConfig) -> torch.Tensor:
        """Step 3: DDIM inversion of each frame with the source prompt, conditional branch only.

        A masked video (`prepare(mask=...)`) also keeps the trajectory, the latent after every
        inversion step but the last, for the blending (`blend.trajectory_index`): float32 on the CPU,
        S latents per frame (3.2 MiB per frame at 512² and 50 steps), only for masked videos."""
        config.validate()
        caching = config.inversion_cache()  # step caching (step_cache.py): () in the key when off
        key = ("inversion", source_prompt, config.steps, *caching.identity())
        if key in video.cache:
            return video.cache[key]
        sched = DDIMSchedule.create(config.steps)
        emb = self.encode_text([source_prompt])
        keep = video.mask is not None
        cache = StepCache.attach(self.models.unet) if caching.active else None
        out, trajectory = [], []
        for start in range(0, video.num_frames, config.inversion_batch):
            z = video.latents[start : start + config.inversion_batch].clone()
            depth = video.depth[start : start + config.inversion_batch]
            path = [z.cpu()] if keep else []
            for k in range(config.steps):
                t = sched.invert_timestep(k)
                slots = [("inversion", start + row) for row in range(z.shape[0])]  # each frame its own
                with cache.step(caching, k, slots, k + 1 == config.steps) if cache else contextlib.nullcontext():
                    eps = self.models.unet(
                        torch.cat([z.to(self.dtype), depth], dim=1), t, emb.expand(z.shape[0], -1, -1)
                    ).sample.float()
                z, _ = ddim_step(z, eps, sched.alpha(t - sched.delta).to(z.device), sched.alpha(t).to(z.device))
                if keep and k < config.steps - 1:
                    path.append(z.cpu())
            out.append(z)
            if keep:
                trajectory.append(torch.stack(path, dim=1))
        video.cache[key] = zT = torch.cat(out)
        if keep:
            video.cache[("trajectory", *key[1:])] = torch.cat(trajectory)
        return zT

    def invert_shots(
        self,
        video: Video,
        shots: Sequence[int],
        source_prompts: Sequence[str],
        config: EditConfig,
        invert: Callable[[int, Video, str], torch.Tensor] | None = None,
    ) -> list[tuple[Video, torch.Tensor]]:
        """Each shot (`pipeline.io.shots`: first frames, `[0]` for one) as a video of its own with its
        inversion under its own source prompt: the (shot video, zT) pairs `edit_shots` takes.
        `invert(start, shot, source)`: where a shot's zT comes from instead (a cache); default `self.invert`."""
        if len(source_prompts) != len(shots):
            raise InputError(f"got {len(source_prompts)} source prompts for {len(shots)} shots")
        out = []
        for (start, stop), source in zip(shot_ranges(shots, video.num_frames), source_prompts, strict=True):
            shot = video if (start, stop) == (0, video.num_frames) else video.segment(start, stop)
            zT = self.invert(shot, source, config) if invert is None else invert(start, shot, source)
            out.append((shot, zT))
        return out

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
            mask = background = None
            if video.mask is not None:  # a masked edit: blend with the inversion's trajectory (blend.py)
                background = video.trajectory_of(zT)
                if background is None:
                    raise InputError(
                        "a masked edit needs the inversion's trajectory: invert this video with "
                        "Pix2Video.invert after prepare(mask=...) (a stored zT has none)"
                    )
                mask = latent_mask(video.mask, self.sizes.vae_factor).to(zT.device)[order]
            for p in range(len(prompts)):
                jobs.append(
                    EditJob(
                        zT[order],
                        video.depth[order],
                        cond[p],
                        uncond,
                        video_id=video.id,
                        prompt=prompts[p],
                        mask=mask,
                        background=background,
                        frame_of=order.tolist() if mask is not None else None,
                        flow=None if video.flow is None else flow_in_order(video.flow, config.reverse)[order],
                    )
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
    def edit_shots(
        self,
        clips: Sequence[Sequence[tuple[Video, torch.Tensor, Sequence[str]]]],
        config: EditConfig,
        on_frame_done: Callable[[int, int, int], None] | None = None,
    ) -> list[list[torch.Tensor]]:
        """Clips cut into shots, each shot edited as a video of its own: its own anchor (its first frame,
        its last with `reverse`), its previous-frame slot starting empty, its own inversion and target
        prompts (`invert_shots`). A clip is a list of (shot video, zT, prompts), every shot with one
        prompt per clip prompt, in frame order. All shots of all clips go through one `edit_many`, so
        they share UNet batches. Results per clip, per prompt: the shots' final latents, concatenated.

        `on_frame_done(clip_index, prompt_index, frame_index)`, the frame index within the clip."""
        flat, owner = [], []
        for c, shots in enumerate(clips):
            if not shots:
                raise InputError("a clip needs at least one shot")
            counts = {len(prompts) for _, _, prompts in shots}
            if len(counts) != 1:
                raise InputError(f"every shot of a clip needs the same number of prompts, got {sorted(counts)}")
            offset = 0
            for shot in shots:
                flat.append(shot)
                owner.append((c, offset))
                offset += shot[0].num_frames
        callback = None
        if on_frame_done is not None:

            def callback(index: int, p: int, f: int) -> None:
                c, offset = owner[index]
                on_frame_done(c, p, offset + f)

        results = self.edit_many(flat, config, callback)
        out: list[list[list[torch.Tensor]]] = [[] for _ in clips]
        for (c, _), latents in zip(owner, results, strict=True):
            out[c].append(latents)
        return [[torch.cat(parts) for parts in zip(*shots, strict=True)] for shots in out]

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

    def decode(
        self, latents: torch.Tensor, batch: int = 4, *, video: Video | None = None, config: EditConfig | None = None
    ) -> Iterator[np.ndarray]:
        """Step 8: VAE decode, clamp, and truncate to uint8 as the reference does.

        With a masked `video` the frames are composited over its input frames with its mask feathered
        by `config.mask_feather` pixels (default: the VAE factor), so what lies farther than that from
        the mask is the input, exactly (`blend.composite`)."""
        frames = self._decode(latents, batch)
        if video is None or video.mask is None:
            return frames
        width = (config or EditConfig()).mask_feather
        width = self.sizes.vae_factor if width is None else width
        return composite(frames, video.frames, pixel_mask(video.mask, width))

    @torch.no_grad()  # on the generator itself: it runs after `decode` has returned
    def _decode(self, latents: torch.Tensor, batch: int) -> Iterator[np.ndarray]:
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
