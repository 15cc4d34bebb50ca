"""Step caching (the idea of DeepCache, Ma, Fang and Wang, CVPR 2024): on most denoising (or inversion)
steps only the UNet's outer levels run; the output of the deep levels is the one of the last full step.

A UNet's high-level features change slowly from one step to the next, while its outer layers (at full
latent resolution) carry the detail. With an interval N, steps 0, N, 2N, ... (by step index) run the
whole UNet and keep, for every row, the hidden state that enters the outermost `depth` layers of the up
path; the steps between run `conv_in`, the down path's first `depth - 1` layers (whose skip
connections those up layers read), those up layers and the output head, and take the rest from the
cache (`StepCache` says which layer is which). SD2's up path has twelve layers, three per level: depth
3 runs its outermost level, skipping the middle block, three levels and six of the nine decoder
self-attention layers; depth 1 runs one layer (DeepCache's shallowest branch).

The feature injection stays exact under this: which steps are full depends on the step index alone,
the same for every frame, so at a cached step every frame runs the same layers, the anchor and the
previous frame recorded exactly those layers at that step, and a skipped layer is neither recorded nor
read by anyone at that step. The deep features a frame reuses are its own from its last full step
(rows are keyed by (job, frame, branch) in the engine, by the frame in the inversion).

Mechanics, diffusers' way (its `diffusers.hooks` registry; its own caches, FirstBlockCache, FasterCache,
PyramidAttentionBroadcast, MagCache, address transformer blocks and decide per call from the features,
so they fit neither a UNet nor one schedule for all frames): a `ModelHook` on each resnet, attention,
sampler and the middle block of the UNet. With no plan set every hook calls its module's own forward,
so the UNet computes exactly what it computed before. A plan is set per UNet call (`StepCache.plan`):
full (keep each row's boundary state in its slot) or cached (skipped modules return empty placeholders
at no cost, the boundary returns the rows' kept states). One UNet call is
either full or cached for all its rows: the engine splits a wavefront tick that mixes both
(`split_items`), which changes the order of no dependency (the items of one tick are independent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.errors import InputError

from .cache_schedule import CacheSchedule

HOOK = "pix2video_step_cache"


@dataclass(frozen=True)
class CachePlan:
    """One UNet call: full (record) or cached (replay), and each batch row's slot. `drop`: the rows
    whose slot is dead after this call (their frame's last step); rows past `slots` are padding."""

    full: bool
    slots: tuple[Hashable, ...]
    depth: int
    drop: tuple[bool, ...] = ()


class StepCache:
    """The hooks on one UNet's layers and the deep features they keep, per slot.

    The UNet as DeepCache sees it: a down path of units (conv_in, then each resnet with its attention,
    and each downsampler), each leaving one skip connection, and an up path of units (each resnet
    with its attention, consuming one skip connection, and each upsampler). The last up unit consumes
    conv_in's skip, the one before it the first down unit's, and so on. A cached step at depth L runs
    conv_in, the first L - 1 down units, and the last L up units (and the upsamplers among them); the
    hidden state that enters the first of those up units is what the full steps keep. SD2 has twelve
    up units; depth 3 is its whole outermost level.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        from diffusers.hooks import HookRegistry

        if len(unet.down_blocks) != len(unet.up_blocks) or unet.mid_block is None:
            raise ValueError("step caching needs a UNet with one up block per down block and a middle block")
        self.plan: CachePlan | None = None
        self.features: dict[Hashable, torch.Tensor] = {}
        self.mid = unet.mid_block
        # Units as lists of (kind, module); a resnet's attention follows it in the same unit.
        self.down_units: list[list[tuple[str, torch.nn.Module]]] = []
        self.up_units: list[list[tuple[str, torch.nn.Module]]] = []  # pairs and upsamplers, in order
        self.up_pairs: list[int] = []  # indices into up_units of the resnet units
        for blocks, units, sampler in ((unet.down_blocks, self.down_units, "downsamplers"),
                                       (unet.up_blocks, self.up_units, "upsamplers")):  # fmt: skip
            for block in blocks:
                attentions = getattr(block, "attentions", None)
                for i, resnet in enumerate(block.resnets):
                    if units is self.up_units:
                        self.up_pairs.append(len(units))
                    units.append([("resnet", resnet)] + ([("attention", attentions[i])] if attentions else []))
                for module in getattr(block, sampler, None) or []:
                    units.append([("sampler", module)])
        self._roles: dict[int, dict[int, str]] = {}
        self._hooks: dict[int, _LayerHook] = {}
        everything = [unit for units in (self.down_units, self.up_units) for unit in units]
        for kind, module in [pair for unit in everything for pair in unit] + [("mid", unet.mid_block)]:
            hook = _LayerHook(self, kind, id(module))
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK)

    @property
    def max_depth(self) -> int:
        """The deepest cached step still skips something: one up unit fewer than the UNet has."""
        return len(self.up_pairs) - 1

    @classmethod
    def attach(cls, unet: torch.nn.Module) -> StepCache:
        """The step cache of `unet`, installed on first use. Without a plan its hooks change nothing."""
        cache = getattr(unet, "_pix2video_step_cache", None)
        if cache is None:
            cache = cls(unet)
            unet._pix2video_step_cache = cache
        return cache

    def reset(self) -> None:
        self.plan = None
        self.features.clear()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values())

    @contextlib.contextmanager
    def step(
        self, schedule: CacheSchedule, step: int, slots: Sequence[Hashable], last: bool | Sequence[bool] = False
    ) -> Iterator[None]:
        """The plan for the UNet calls inside: all rows at `step` under `schedule`; nothing when off."""
        if not schedule.active:
            yield
            return
        if not 1 <= schedule.depth <= self.max_depth:
            raise InputError(f"--cache-depth {schedule.depth}: give 1 to {self.max_depth} for this UNet")
        drop = tuple(last) if not isinstance(last, bool) else (last,) * len(slots)
        self.plan = CachePlan(schedule.full(step), tuple(slots), schedule.depth, drop)
        try:
            yield
        finally:
            self.plan = None

    def roles(self, depth: int) -> dict[int, str]:
        """Module id -> "skip" or "boundary" on a cached step at `depth` (modules that run: absent)."""
        if depth not in self._roles:
            roles: dict[int, str] = {id(self.mid): "skip"}
            for unit in self.down_units[depth - 1 :]:  # conv_in and the first depth - 1 units run
                roles.update((id(module), "skip") for _, module in unit)
            first_fresh = self.up_pairs[len(self.up_pairs) - depth]
            for unit in self.up_units[:first_fresh]:
                roles.update((id(module), "skip") for _, module in unit)
            roles[id(self.up_units[first_fresh - 1][-1][1])] = "boundary"  # what enters the first fresh unit
            self._roles[depth] = roles
        return self._roles[depth]

    def keep(self, output: torch.Tensor, plan: CachePlan) -> None:
        for row, slot in enumerate(plan.slots):
            self.features[slot] = output[row].clone()  # a clone: no view keeps the whole batch alive
        self._drop(plan)

    def replay(self, like: torch.Tensor, plan: CachePlan) -> torch.Tensor:
        missing = [slot for slot in plan.slots if slot not in self.features]
        if missing:
            raise RuntimeError(f"step cache: no full step was recorded for {missing[:3]}")
        out = torch.stack([self.features[slot] for slot in plan.slots])
        if out.shape[0] < like.shape[0]:  # a compiled UNet's padding rows: copies of the last real row
            out = torch.cat([out, out[-1:].expand(like.shape[0] - out.shape[0], *out.shape[1:])])
        self._drop(plan)
        return out

    def _drop(self, plan: CachePlan) -> None:
        for slot, dead in zip(plan.slots, plan.drop, strict=False):
            if dead:
                self.features.pop(slot, None)


def split_items(items: list[tuple[int, int, int]], schedule: CacheSchedule) -> list[list[tuple[int, int, int]]]:
    """(job, frame, step) items of one tick as groups of one kind of step each (full first, then
    cached), one UNet call each; the items as one group when caching is off or they agree."""
    if not schedule.active:
        return [items]
    full = [item for item in items if schedule.full(item[2])]
    cached = [item for item in items if not schedule.full(item[2])]
    return [group for group in (full, cached) if group]


def engine_rows(
    cache: StepCache | None, schedule: CacheSchedule, items: list[tuple[int, int, int]], branches: int, steps: int
) -> contextlib.AbstractContextManager:
    """The plan of one engine UNet call: its (job, frame, step) items (one kind of step, `split_items`),
    `branches` rows each; a row's slot is (job, frame, branch), dead after the frame's last step."""
    if cache is None or not schedule.active:
        return contextlib.nullcontext()
    slots = [(j, f, b) for j, f, _ in items for b in range(branches)]
    last = [k + 1 == steps for _, _, k in items for _ in range(branches)]
    return cache.step(schedule, items[0][2], slots, last)


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    for name in ("hidden_states", "input_tensor"):
        if name in kwargs:
            return kwargs[name]
    return args[0]


class _LayerHook:
    """A diffusers `ModelHook` (duck-typed: `new_forward`, and the registry's `fn_ref`; importing
    diffusers here would load it with the options' module) on one resnet, attention, sampler or the
    middle block. A skipped module returns a placeholder with no channels, of its input's batch and
    size: only skipped modules ever read it (and concatenate it with skip connections), at no cost."""

    _is_stateful = False

    def __init__(self, cache: StepCache, kind: str, key: int) -> None:
        self.cache, self.kind, self.key = cache, kind, key
        self.fn_ref: Any = None

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def deinitalize_hook(self, module: torch.nn.Module) -> torch.nn.Module:  # diffusers' spelling
        return module

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    # Under torch.compile the graph breaks here (the plan is Python state that changes every call, as
    # the injection processor's): each hooked module then runs eagerly. Compile and step caching
    # together are correct, but not yet measured to pay.
    @torch.compiler.disable
    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        plan, cache = self.cache.plan, self.cache
        role = None if plan is None else cache.roles(plan.depth).get(self.key)
        if role is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        if plan.full:
            out = self.fn_ref.original_forward(*args, **kwargs)
            if role == "boundary":
                cache.keep(out[0] if self.kind == "attention" else out, plan)
            return out
        hidden = _hidden(args, kwargs)
        out = cache.replay(hidden, plan) if role == "boundary" else hidden[:, :0]
        return (out,) if self.kind == "attention" else out  # the blocks call attentions with return_dict=False
