"""The batched step engine: denoise many (job, frame, step) items per UNet call.

A job is one (video, prompt) edit. Item (frame i, step k) of a job depends only on (i, k-1),
(i-1, k) and (anchor, k) (docs/METHOD.md, "Memory and order"). The engine keeps, per job, the next
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

from .blend import blend_latents, trajectory_index
from .config import INJECTIONS, EngineSettings
from .ddim import DDIMSchedule, ddim_step
from .injection import FeatureStore, InjectionPlan, random_sources
from .step_cache import StepCache, engine_rows, split_items
from .steps import classifier_free_guidance, flow_fusion, latent_update, warp_latent


@dataclass
class EditJob:
    """One (video, prompt) edit: frames in edit order (the anchor first)."""

    latents: torch.Tensor  # zT, [N,4,h,w] float32
    depth: torch.Tensor  # [N,1,h,w] conditioning in [-1,1], model dtype
    cond: torch.Tensor  # [77,D] target prompt embedding
    uncond: torch.Tensor  # [77,D] negative prompt embedding
    video_id: str = ""  # with `prompt`: what the 'random' ablation's draws depend on
    prompt: str = ""
    # A masked edit (blend.py): the feathered latent mask [N,1,h,w] in edit order, on the device, and
    # the inversion trajectory [N_video,S,4,h,w] (CPU, video frame order: `frame_of` maps positions).
    mask: torch.Tensor | None = None
    background: torch.Tensor | None = None
    frame_of: list[int] | None = None
    # Beyond the paper (steps.warp_latent): per position, (dx, dy, valid) [N,3,h,w] of the input's flow
    # towards the frame edited before it, on the device; None: no motion, valid everywhere.
    flow: torch.Tensor | None = None


def _flow_at(job: EditJob, position: int, like: torch.Tensor) -> torch.Tensor:
    """The job's flow (dx, dy, valid) [3,h,w] at `position`; without flow, no motion and valid everywhere."""
    if job.flow is not None:
        return job.flow[position].to(like.device, torch.float32)
    still = torch.zeros((3, *like.shape[2:]), device=like.device)
    still[2] = 1
    return still


@dataclass
class StepTrace:
    """What one item's step did, for tests and debugging (see `DenoiseEngine.trace`)."""

    job: int
    frame: int  # position in edit order
    step: int
    x0: torch.Tensor  # x̂0 of this step
    z_ddim: torch.Tensor  # z after the DDIM move, before the latent update
    z: torch.Tensor  # z after the latent update


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
        self.step_cache = StepCache.attach(unet) if settings.cache.active else None

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
        x0_prev = torch.zeros((len(jobs), steps, *z[0].shape[1:]), device=z[0].device) if s.keeps_x0 else None
        remaining = sum(num_frames) * steps
        try:
            while remaining:
                items = self._ready(next_step, first_open, num_frames)[: s.max_batch]
                for group in split_items(items, s.cache):  # full and cached steps: one UNet call each
                    self._step(jobs, z, group, sources, x0_prev)
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
            if self.step_cache is not None:
                self.step_cache.reset()
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
        """What the injection processors do with each row of one UNet call (see `InjectionPlan`).

        `items` are in row order, anchor frames first; `sources[job]` are the random ablation's draws."""
        if not self.settings.sources:  # "none": ordinary attention everywhere, nothing recorded
            return None
        anchors = [(j, k) for j, f, k in items if f == 0]
        later = [(j, f, k) for j, f, k in items if f > 0]
        # The row layout InjectionProcessor slices on: plain (anchor) rows first, then injected rows.
        assert all(f == 0 for _, f, _ in items[: len(anchors)]), "anchor items must come first"
        plan = InjectionPlan(n_plain=len(anchors) * self.settings.branches)
        if anchors:
            self._plan_anchor_rows(plan, anchors)
        if later:
            self._plan_later_rows(plan, later, sources)
        return plan

    def _rows(self, keys: list[tuple[int, int, int]], row_of: Callable[[int, int, int, int], int]) -> torch.Tensor:
        """Store rows `row_of(job, slot, step, branch)` for every (job, slot, step) key and branch, in
        batch-row order (each key's branches adjacent)."""
        rows = [row_of(j, slot, k, b) for j, slot, k in keys for b in range(self.settings.branches)]
        return torch.tensor(rows, dtype=torch.long, device=self.unet.device)

    def _plan_anchor_rows(self, plan: InjectionPlan, anchors: list[tuple[int, int]]) -> None:
        """The anchor attends to itself and is recorded: as the anchor, and as frame 1's previous frame
        (slot 0, which is also position 0 of the random ablation's one-slot-per-frame store)."""
        store = self.store
        keys = [(j, 0, k) for j, k in anchors]
        if self.settings.uses_anchor:
            plan.record_anchor = self._rows(keys, lambda j, _slot, k, b: store.anchor_index(j, k, b))
        if self.settings.uses_prev:
            plan.record_prev_plain = self._rows(keys, store.prev_index)

    def _plan_later_rows(
        self, plan: InjectionPlan, later: list[tuple[int, int, int]], sources: list[list[int]]
    ) -> None:
        """A later frame reads its sources (`EngineSettings.sources`) and leaves its own features for the
        next frame: in the one rolling slot, or, for the random ablation, in its own slot."""
        s, store = self.settings, self.store
        if s.uses_anchor:
            keys = [(j, 0, k) for j, _, k in later]
            plan.read_anchor = self._rows(keys, lambda j, _slot, k, b: store.anchor_index(j, k, b))
        if s.uses_prev:
            read = [(j, sources[j][f] if s.random_earlier else 0, k) for j, f, k in later]
            plan.read_prev = self._rows(read, store.prev_index)
        if s.uses_prev or s.anchor_refresh:  # a refreshed anchor is copied from the frame's prev slot
            write = [(j, f if s.random_earlier else 0, k) for j, f, k in later]
            plan.write_prev = self._rows(write, store.prev_index)

    @torch.no_grad()
    def _step(self, jobs, z, items, sources, x0_prev) -> None:
        """One UNet call for `items` ((job, frame position, step) each), then each item's guidance, DDIM
        step and latent update; the new latents go back into `z`."""
        s, sched = self.settings, self.schedule
        unet = self.unet
        dtype, device = unet.dtype, unet.device
        nb = s.branches

        # 1. Row layout, the contract with InjectionPlan: the plain rows (anchor frames) first, then the
        #    injected rows (later frames); each item's CFG branches adjacent (unconditional, conditional).
        items = [item for item in items if item[1] == 0] + [item for item in items if item[1] > 0]

        # 2. The UNet input: each item's latent with its frame's depth conditioning as a fifth channel.
        latents = torch.stack([z[j][f] for j, f, _ in items])
        depth = torch.stack([jobs[j].depth[f] for j, f, _ in items])
        sample = torch.cat([latents.to(dtype), depth.to(dtype)], dim=1).repeat_interleave(nb, dim=0)

        # 3. Timesteps τ_k and text embeddings (negative prompt, target prompt) per row.
        t = torch.tensor([sched.denoise_timestep(k) for _, _, k in items], dtype=torch.long)
        embeddings = [
            emb for j, _, _ in items for emb in ((jobs[j].uncond, jobs[j].cond) if nb == 2 else (jobs[j].cond,))
        ]

        # 4. Feature injection: which rows attend to what, and what each row leaves for later frames.
        self.store.plan = self._plan(items, sources)

        # 5. Predict the noise (with step caching, the items are all full steps or all cached ones, and
        #    each row's deep features are its own: slot (job, frame, branch), dead after its last step).
        self.unet_calls += 1
        try:
            with engine_rows(self.step_cache, s.cache, items, nb, sched.steps):
                eps = unet(
                    sample, t.repeat_interleave(nb).to(device), torch.stack(embeddings).to(dtype)
                ).sample.float()
        finally:
            self.store.plan = None

        # 6. Classifier-free guidance.
        if nb == 2:
            eps = eps.view(len(items), 2, *eps.shape[1:])
            eps = classifier_free_guidance(eps[:, 0], eps[:, 1], s.guidance_scale)

        # 7. DDIM step from τ_k to τ_k − Δ: x̂0, and the new latent.
        shape = (-1, 1, 1, 1)
        a = sched.alpha(t).view(shape).to(device)
        b = sched.alpha(t - sched.delta).view(shape).to(device)
        new, x0 = ddim_step(latents, eps, a, b)
        ddim_only = new

        # 8. Latent update, frames after the anchor at steps 0..K_u: towards the previous frame's x̂0 at
        #    the same step; then this frame's x̂0 (as computed, before the update) is the next frame's.
        #    Beyond the paper (off by default): x̂0_prev warped along the input's flow for the update and
        #    for the fusion at late steps, which also changes the x̂0 the next frame gets.
        if x0_prev is not None:
            jk = (torch.tensor([j for j, _, _ in items]), torch.tensor([k for _, _, k in items]))
            previous, warped, valid = x0_prev[jk], None, None
            if s.uses_flow:
                flow = torch.stack([_flow_at(jobs[j], f, x0) for j, f, _ in items])
                warped, valid = warp_latent(previous, flow), flow[:, 2:3]
            fused = [row for row, (_, f, k) in enumerate(items) if s.fuses(f, k)]
            if fused:
                rows = torch.tensor(fused, device=device)
                z_f, x0_f = flow_fusion(
                    new[rows], x0[rows], warped[rows], valid[rows], s.fusion_weight, b[rows].sqrt(), s.fusion_tolerance
                )
                new, x0 = new.index_copy(0, rows, z_f), x0.index_copy(0, rows, x0_f)
            if s.latent_update:
                update = torch.tensor([f > 0 and k <= s.update_last_step for _, f, k in items], device=device)
                if s.flow_update:
                    new = latent_update(new, x0, warped, s.update_weight, where=update, valid=valid)
                else:
                    new = latent_update(new, x0, previous, s.update_weight, where=update)
            x0_prev[jk] = x0

        # 9. Masked edits (blend.py): outside the mask, the inversion's latent at the level just reached.
        masked = [row for row, (j, _, _) in enumerate(items) if jobs[j].mask is not None]
        if masked:
            steps = sched.steps
            mask = torch.stack([jobs[items[r][0]].mask[items[r][1]] for r in masked])
            background = torch.stack(
                [
                    jobs[j].background[jobs[j].frame_of[f], trajectory_index(steps, k)]
                    for j, f, k in (items[r] for r in masked)
                ]
            ).to(device)
            rows = torch.tensor(masked, device=device)
            new = new.index_copy(0, rows, blend_latents(new[rows], background, mask))

        # 10. Anchor refresh: a frame at a refresh position leaves its features as the anchor's. Every
        #     earlier frame has passed this step (the method's order), so none reads the old anchor again.
        if s.anchor_refresh:
            self._refresh_anchor([(j, f, k) for j, f, k in items if s.refreshes(f)])

        # 11. Keep the new latents (and trace the step).
        for row, (j, f, k) in enumerate(items):
            z[j][f] = new[row]
            if self.trace is not None:
                self.trace(StepTrace(j, f, k, x0[row].clone(), ddim_only[row].clone(), new[row].clone()))

    def _refresh_anchor(self, items: list[tuple[int, int, int]]) -> None:
        """Copy the features these (job, frame, step) items just recorded in their previous-frame slot
        into their job's anchor rows at that step, for every injected layer."""
        if not items:
            return
        store, s = self.store, self.settings
        src = self._rows([(j, f if s.random_earlier else 0, k) for j, f, k in items], store.prev_index)
        dst = self._rows([(j, 0, k) for j, _, k in items], lambda j, _slot, k, b: store.anchor_index(j, k, b))
        for layer, anchor in store.anchor.items():
            anchor.index_copy_(0, dst, store.prev[layer].index_select(0, src))
