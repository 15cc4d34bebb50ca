"""The UNet work of an edit, counted: FLOPs per UNet row by what the row does, and a counter of the rows
an edit runs of each kind.

A row's cost depends on two things only: whether its step is full or cached (`step_cache.py`), and how
many recorded frames its decoder self-attention attends to (0: its own tokens, as the inversion, the
anchor and per-frame editing; 1 or 2 with the injection: keys and values over 1 or 2 frames' tokens).
`row_flops` counts each kind once with `torch.utils.flop_counter.FlopCounterMode` on one call of one
row at the edit's size, made on a twin of the UNet on the meta device (the same class and config, the
same injection processors and step cache; no weights, no arithmetic: the counter reads shapes, so the
count is the real UNet's, at no cost). The math attention backend is used while counting, so that
attention is counted (the fused attention kernels have no FLOP formula on every device; the math one
is matrix products, which it has). UNet rows never mix, so a call of B rows costs B times one row.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from .cache_schedule import CacheSchedule
from .injection import FeatureStore, InjectionPlan
from .step_cache import StepCache

Kind = tuple[bool, int]  # (cached step, recorded frames attended to)


@torch.no_grad()
def row_flops(unet: torch.nn.Module, height: int, width: int, depth: int, vae_factor: int = 8) -> dict[Kind, int]:
    """FLOPs of one row of `unet` of each kind at `height` x `width` pixels, cached steps at `depth`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from .injection import install

    cfg = unet.config
    with torch.device("meta"):
        twin = type(unet).from_config(cfg)
    store = FeatureStore()
    install(twin, store)
    meta = {"device": "meta", "dtype": unet.dtype}
    sample = torch.empty((1, cfg.in_channels, height // vae_factor, width // vae_factor), **meta)
    emb = torch.empty((1, 77, cfg.cross_attention_dim), **meta)
    t = torch.tensor([500], device="meta")
    one = torch.zeros(1, dtype=torch.long, device="meta")
    cache = StepCache.attach(twin)
    schedule = CacheSchedule(interval=2, depth=depth)  # step 0 full, step 1 cached
    plans = {
        0: InjectionPlan(n_plain=1, record_anchor=one, record_prev_plain=one),
        1: InjectionPlan(n_plain=0, read_anchor=one, write_prev=one),
        2: InjectionPlan(n_plain=0, read_anchor=one, read_prev=one, write_prev=one),
    }
    out: dict[Kind, int] = {}
    store.reset(num_jobs=1, steps=1, branches=1)
    try:
        for step, cached in ((0, False), (1, True)):
            for sources, plan in plans.items():  # 0 first: it records what 1 and 2 read
                store.plan = plan
                with cache.step(schedule, step, ["flops"]), sdpa_kernel([SDPBackend.MATH]):
                    with FlopCounterMode(display=False) as counter:
                        twin(sample, t, emb)
                out[cached, sources] = int(counter.get_total_flops())
    finally:
        store.plan = None
    return out


class RowCounter:
    """Counts the UNet rows of each kind as they run (a forward pre-hook on the UNet), per phase (what
    `phase` says when the call happens: e.g. "inversion", "edit")."""

    def __init__(self, unet: torch.nn.Module, store: FeatureStore) -> None:
        self.unet, self.store = unet, store
        self.phase = ""
        self.counts: Counter[tuple[str, bool, int]] = Counter()
        self._hook = unet.register_forward_pre_hook(self._count)

    def _count(self, _module: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        rows = inputs[0].shape[0]
        cache = getattr(self.unet, "_pix2video_step_cache", None)
        cached = cache is not None and cache.plan is not None and not cache.plan.full
        plan = self.store.plan
        if plan is None:
            self.counts[self.phase, cached, 0] += rows
            return
        sources = sum(index is not None for index in (plan.read_anchor, plan.read_prev))
        self.counts[self.phase, cached, 0] += plan.n_plain
        self.counts[self.phase, cached, sources] += plan.rows - plan.n_plain

    def reset(self) -> None:
        self.counts.clear()

    def remove(self) -> None:
        self._hook.remove()

    def rows(self, phase: str | None = None) -> int:
        return sum(n for (p, _, _), n in self.counts.items() if phase is None or p == phase)

    def flops(self, per_row: dict[Kind, int], phase: str | None = None) -> int:
        """The FLOPs of the counted rows (of one phase, or all), at `per_row`'s cost per kind."""
        counts = self.counts.items()
        return sum(n * per_row[cached, sources] for (p, cached, sources), n in counts if phase in (None, p))

    def full_flops(self, per_row: dict[Kind, int], phase: str | None = None) -> int:
        """What the counted rows would cost with every step full (no step caching)."""
        return sum(n * per_row[False, sources] for (p, _, sources), n in self.counts.items() if phase in (None, p))
