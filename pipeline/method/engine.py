"""The batched step engine: denoise many (job, frame, step) items per UNet call.

A job is one (video, prompt) edit. Item (frame i, step k) of a job depends only on (i, k-1),
(i-1, k) and (anchor, k) (ALGORITHM.md, "Memory and order"). The engine keeps, per job, the next
step of every frame; an item is ready when its frame's previous step is done and the previous frame
has passed step k. Each tick runs up to `max_batch` ready items as one UNet call, every item with its
own timestep, depth, prompt embeddings, stores and latent update.

Schedules are policies on top of this: `max_batch=1` is the reference's sequential order (frame by
frame, step by step); a larger `max_batch` runs whole anti-diagonals (`i + k` constant) of a video
("wavefront") and, with several jobs, the same step of several prompts together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .ddim import DDIMSchedule, ddim_step
from .injection import FeatureStore, InjectionPlan, random_sources

INJECTIONS = ("anchor+prev", "anchor", "prev", "random", "none")
SCHEDULES = ("auto", "sequential", "wavefront")


AUTO_SCHEDULE = "wavefront"  # what `--schedule auto` runs, on every device (BENCHMARKS.md has the timings)


@dataclass
class EditJob:
    """One (video, prompt) edit: frames in edit order (the anchor first)."""

    latents: torch.Tensor  # zT, [N,4,h,w] float32
    depth: torch.Tensor  # [N,1,h,w] conditioning in [-1,1], model dtype
    cond: torch.Tensor  # [77,D] target prompt embedding
    uncond: torch.Tensor  # [77,D] negative prompt embedding
    video_id: str = ""  # with `prompt`: what the 'random' ablation's draws depend on
    prompt: str = ""


@dataclass
class StepTrace:
    """What one item's step did, for tests and debugging (see `DenoiseEngine.trace`)."""

    job: int
    frame: int  # position in edit order
    step: int
    x0: torch.Tensor  # x̂0 of this step
    z_ddim: torch.Tensor  # z after the DDIM move, before the latent update
    z: torch.Tensor  # z after the latent update


@dataclass(frozen=True)
class EngineSettings:
    guidance_scale: float = 7.5
    injection: str = "anchor+prev"
    latent_update: bool = True
    update_weight: float = 100.0
    update_last_step: int = 25  # K_u: steps 0..K_u inclusive get the update
    max_batch: int = 1
    seed: int = 0

    @property
    def branches(self) -> int:
        # g = 1 makes the unconditional branch cancel out, so it is not computed.
        return 1 if self.guidance_scale == 1 else 2

    @property
    def uses_anchor(self) -> bool:
        return self.injection in ("anchor+prev", "anchor", "random")

    @property
    def uses_prev(self) -> bool:
        return self.injection in ("anchor+prev", "prev", "random")


class DenoiseEngine:
    def __init__(
        self,
        unet: torch.nn.Module,
        schedule: DDIMSchedule,
        store: FeatureStore,
        settings: EngineSettings,
    ) -> None:
        if settings.injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {', '.join(INJECTIONS)}, got {settings.injection!r}")
        if settings.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.unet = unet
        self.schedule = schedule
        self.store = store
        self.settings = settings
        self.trace: Callable[[StepTrace], None] | None = None
        self.store_bytes = 0  # size of the feature store at the end of the last run
        self.unet_calls = 0

    def run(
        self, jobs: list[EditJob], on_frame_done: Callable[[int, int], None] | None = None
    ) -> list[torch.Tensor]:
        """Denoise every frame of every job; returns final latents per job, in edit order."""
        s, steps = self.settings, self.schedule.steps
        num_frames = [job.latents.shape[0] for job in jobs]
        z = [job.latents.detach().clone().float() for job in jobs]
        next_step = [[0] * n for n in num_frames]
        first_open = [0] * len(jobs)  # first frame of each job not yet finished
        sources = [random_sources(len(job.latents), s.seed, job.video_id, job.prompt) for job in jobs]
        random_mode = s.injection == "random"
        self.store.reset(len(jobs), steps, s.branches, prev_slots=max(num_frames) if random_mode else 1)
        # x̂0 of the previous frame at each step, overwritten in place as frames advance.
        x0_prev = torch.zeros((len(jobs), steps, *z[0].shape[1:]), device=z[0].device) if s.latent_update else None
        remaining = sum(num_frames) * steps
        try:
            while remaining:
                items = self._ready(next_step, first_open, num_frames)[: s.max_batch]
                self._step(jobs, z, items, sources, x0_prev)
                for j, f, k in items:
                    next_step[j][f] = k + 1
                    if k + 1 == steps:
                        while first_open[j] < num_frames[j] and next_step[j][first_open[j]] == steps:
                            first_open[j] += 1
                        if on_frame_done is not None:
                            on_frame_done(j, f)
                remaining -= len(items)
            self.store_bytes = self.store.nbytes
        finally:
            self.store.reset(0, 0, 0)
        return z

    def _ready(self, next_step: list[list[int]], first_open: list[int], num_frames: list[int]):
        """Ready (job, frame, step) items by frame, then job, so the jobs of a batch move in lockstep."""
        steps = self.schedule.steps
        ready = []
        for j, frames in enumerate(next_step):
            for f in range(first_open[j], num_frames[j]):
                k = frames[f]
                if f == 0 or frames[f - 1] > k:
                    if k < steps:
                        ready.append((j, f, k))
                if k == 0:  # later frames have not started and cannot be ready
                    break
        ready.sort(key=lambda item: (item[1], item[0]))
        return ready

    def _plan(self, items: list[tuple[int, int, int]], sources: list[list[int]]) -> InjectionPlan | None:
        s, store = self.settings, self.store
        if s.injection == "none":
            return None
        branches = range(s.branches)
        random_mode = s.injection == "random"
        anchors = [(j, k) for j, f, k in items if f == 0]
        others = [(j, f, k) for j, f, k in items if f > 0]
        # The row layout InjectionProcessor slices on: plain (anchor) rows first, then injected rows.
        assert all(f == 0 for _, f, _ in items[: len(anchors)]), "anchor items must come first"
        device = self.unet.device

        def index(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        plan = InjectionPlan(n_plain=len(anchors) * s.branches)
        if anchors:
            if s.uses_anchor:
                plan.record_anchor = index([store.anchor_index(j, k, b) for j, k in anchors for b in branches])
            if s.uses_prev:
                plan.record_prev_plain = index([store.prev_index(j, 0, k, b) for j, k in anchors for b in branches])
        if others:
            if s.uses_anchor:
                plan.read_anchor = index([store.anchor_index(j, k, b) for j, f, k in others for b in branches])
            if s.uses_prev:
                src = [(j, sources[j][f] if random_mode else 0, k) for j, f, k in others]
                dst = [(j, f if random_mode else 0, k) for j, f, k in others]
                plan.read_prev = index([store.prev_index(j, sl, k, b) for j, sl, k in src for b in branches])
                plan.write_prev = index([store.prev_index(j, sl, k, b) for j, sl, k in dst for b in branches])
        return plan

    @torch.no_grad()
    def _step(self, jobs, z, items, sources, x0_prev) -> None:
        s, sched = self.settings, self.schedule
        unet = self.unet
        dtype, device = unet.dtype, unet.device
        nb = s.branches
        # Row layout, the contract with InjectionPlan: the plain rows (anchor frames) first, then the
        # injected rows (later frames); each item's CFG branches are adjacent (unconditional, conditional).
        items = [item for item in items if item[1] == 0] + [item for item in items if item[1] > 0]
        latents = torch.stack([z[j][f] for j, f, _ in items])
        depth = torch.stack([jobs[j].depth[f] for j, f, _ in items])
        sample = torch.cat([latents.to(dtype), depth.to(dtype)], dim=1).repeat_interleave(nb, dim=0)
        t = torch.tensor([sched.denoise_timestep(k) for _, _, k in items], dtype=torch.long)
        embeddings = [
            emb for j, _, _ in items for emb in ((jobs[j].uncond, jobs[j].cond) if nb == 2 else (jobs[j].cond,))
        ]
        self.store.plan = self._plan(items, sources)
        self.unet_calls += 1
        try:
            eps = unet(
                sample, t.repeat_interleave(nb).to(device), torch.stack(embeddings).to(dtype)
            ).sample.float()
        finally:
            self.store.plan = None
        if nb == 2:
            eps = eps.view(len(items), 2, *eps.shape[1:])
            eps = eps[:, 0] + s.guidance_scale * (eps[:, 1] - eps[:, 0])
        shape = (-1, 1, 1, 1)
        a = sched.alpha(t).view(shape).to(device)
        b = sched.alpha(t - sched.delta).view(shape).to(device)
        new, x0 = ddim_step(latents, eps, a, b)
        ddim_only = new
        if x0_prev is not None:
            jk = (torch.tensor([j for j, _, _ in items]), torch.tensor([k for _, _, k in items]))
            previous = x0_prev[jk]
            n = x0[0].numel()
            update = torch.tensor(
                [f > 0 and k <= s.update_last_step for _, f, k in items], device=device
            ).view(shape)
            # Gradient of λ·mean((x̂0 - x̂0_prev)²) w.r.t. x̂0, applied to z (the reference's "guidance").
            new = torch.where(update, new - s.update_weight * (2.0 / n) * (x0 - previous), new)
            x0_prev[jk] = x0
        for row, (j, f, k) in enumerate(items):
            z[j][f] = new[row]
            if self.trace is not None:
                self.trace(StepTrace(j, f, k, x0[row].clone(), ddim_only[row].clone(), new[row].clone()))
