"""The method's options: `EditConfig` (what the user chooses) and `EngineSettings` (what the batched
engine runs, derived from it), with the names of the injection variants and schedules.

Apart from the method's code on purpose: the command line makes its editing flags from these fields
(`pipeline.options.option`: help, choices, flag name) when it builds its parser, and importing this
module loads neither diffusers nor the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from pipeline.errors import InputError
from pipeline.options import option

from .cache_schedule import AUTO_INTERVAL, DEFAULT_DEPTH, ON_INTERVAL, CacheSchedule, parse_interval, warmup_steps
from .sources import ANCHOR, INJECTION_SOURCES, PREVIOUS, RANDOM_EARLIER

INJECTIONS = tuple(INJECTION_SOURCES)
SCHEDULES = ("auto", "sequential", "wavefront")


AUTO_SCHEDULE = "wavefront"  # what `--schedule auto` runs, on every device (BENCHMARKS.md has the timings)


@dataclass
class EditConfig:
    """Everything that changes an edit's result, plus how it is scheduled (which does not)."""

    steps: int = option(50, help="DDIM steps (default %(default)s)")
    guidance_scale: float = option(7.5, help="classifier-free guidance scale (default %(default)s)")
    negative_prompt: str = option("", help="prompt of the unconditional branch (default empty)")
    injection: str = option(
        "anchor+prev",
        choices=INJECTIONS,
        help="what the frames after the anchor attend to (docs/METHOD.md, step 5): the anchor and the previous "
        "frame (the method, default), one of them, the anchor and a random earlier frame, or nothing (none: "
        "per-frame editing)",
    )
    latent_update: bool = option(True, flag="--no-latent-update", help="skip the latent update")
    update_weight: float = option(
        100.0,
        help="λ of the latent update (default %(default)g, the published value): each latent element moves by "
        "λ·2/(4·64·64)·(x̂0 − x̂0_prev), the published step at SD2's 512² size, the same at every size",
    )
    update_last_step: int | None = option(  # K_u; None = steps // 2
        None,
        metavar="K",
        help="last step (from 0) that gets the latent update (default steps // 2, as the reference)",
    )
    # Beyond the paper (docs/METHOD.md): steps that follow the input clip's optical flow (pipeline.io.flow).
    flow_update: bool = option(
        False,
        help="beyond the paper: the latent update pulls towards the previous frame's x̂0 warped along the input's "
        "optical flow, and not where forward and backward flow disagree",
    )
    fusion_steps: int = option(
        0,
        metavar="K",
        help="beyond the paper: at the last K steps, pull x̂0 towards the previous frame's, warped along the "
        "input's flow, where the flow is consistent (default %(default)s: off)",
    )
    fusion_weight: float = option(
        0.5, help="beyond the paper: how far --fusion-steps pulls, 0 to 1 (default %(default)g)"
    )
    fusion_tolerance: float = option(
        0.0,
        metavar="T",
        help="beyond the paper: the fusion pulls a latent cell less the more it and the warped previous x̂0 "
        "differ, by exp(-(d/T)^2) (d: their mean absolute difference); 0 (default): by the flow's mask alone",
    )
    reverse: bool = option(False, help="anchor on the last frame and edit backwards")
    # Only the 'random' injection ablation draws anything: from (seed, video id, prompt).
    seed: int = option(0, help="seed of the 'random' injection ablation (nothing else draws)")
    schedule: str = option(
        "auto",
        choices=SCHEDULES,
        help="order of the UNet work (same frames either way): sequential = the reference's frame by frame; "
        "wavefront = every ready (frame, step, prompt) item batched; auto = the faster on the device (default)",
    )
    max_batch: int = option(8, help="wavefront: items per UNet call (default %(default)s)")
    inversion_batch: int = 8  # frames per UNet call during inversion
    decode_batch: int = 4  # frames per VAE call
    # K > 0: frames K, 2K, ... (edit order) become the anchor of the frames after them; no effect on the
    # injections that do not attend to the anchor (prev, none)
    anchor_refresh: int = option(
        0,
        metavar="K",
        help="long videos: frames K, 2K, ... of each shot, as edited, become the anchor of the frames after "
        "them (default %(default)s: the first frame anchors the whole shot, as the paper)",
    )
    mask_feather: int | None = option(  # masked edits: pixels the mask is feathered by; None = the VAE factor
        None,
        metavar="PX",
        help="masked edits: pixels the mask is feathered by outwards when the edit is composited over the "
        "input (default: the model's VAE factor, one latent cell; 8 for SD2)",
    )
    # Step caching (step_cache.py): approximations, so they change the frames and are method options.
    cache_interval: str = option(
        "auto",
        metavar="auto|on|off|N",
        help="step caching in the edit: the whole UNet every N-th step, the others reuse its deep blocks' "
        f"output (on = {ON_INTERVAL}; auto = {AUTO_INTERVAL['edit'] or 'off'}; off, 0 or 1: every step whole)",
    )
    inversion_cache_interval: str = option(
        "auto",
        metavar="auto|on|off|N",
        help=f"step caching in the inversion, as --cache-interval (auto = {AUTO_INTERVAL['inversion'] or 'off'})",
    )
    cache_depth: int = option(
        DEFAULT_DEPTH,
        help="step caching: the outermost up-path layers that still run on cached steps (default %(default)s "
        "of SD2's 12: its outermost level; 1 = DeepCache's shallowest branch)",
    )

    cache_warmup: float = option(
        0.0,
        metavar="F",
        help="step caching in the edit: the first share F of the steps (the noisiest, where the picture is "
        "laid out) all run whole, the interval counts from there (default %(default)g)",
    )

    def edit_cache(self) -> CacheSchedule:
        interval = parse_interval(self.cache_interval, "cache_interval", "edit")
        return CacheSchedule(interval, self.cache_depth, warmup_steps(self.cache_warmup, self.steps))

    def inversion_cache(self) -> CacheSchedule:
        interval = parse_interval(self.inversion_cache_interval, "inversion_cache_interval", "inversion")
        return CacheSchedule(interval, self.cache_depth)

    def validate(self) -> None:
        # Every whole-number option within 32 bits, before any work: results.parquet stores them as int32
        # (--anchor-refresh 3000000000 wrote the mp4 and marker, then failed writing the table, every rerun).
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and not -(2**31) < value < 2**31:
                raise InputError(f"--{f.name.replace('_', '-')} {value} is out of range (at most {2**31 - 1})")
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
        if isinstance(self.fusion_steps, bool) or not isinstance(self.fusion_steps, int) or self.fusion_steps < 0:
            raise InputError(f"--fusion-steps must be a whole number of at least 0, got {self.fusion_steps!r}")
        weight = self.fusion_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise InputError(f"--fusion-weight must be a number from 0 to 1, got {weight!r}")
        tol = self.fusion_tolerance
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < float("inf"):
            raise InputError(f"--fusion-tolerance must be a number of at least 0, got {tol!r}")
        if self.max_batch < 1 or self.inversion_batch < 1 or self.decode_batch < 1:
            raise InputError("batch sizes must be at least 1")
        for name in ("anchor_refresh", "mask_feather"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InputError(f"--{name.replace('_', '-')} must be a whole number of at least 0, got {value!r}")
        self.edit_cache(), self.inversion_cache()  # each raises on a bad interval
        if isinstance(self.cache_depth, bool) or not isinstance(self.cache_depth, int) or self.cache_depth < 1:
            raise InputError(f"--cache-depth must be a whole number of at least 1, got {self.cache_depth!r}")

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
            anchor_refresh=self.anchor_refresh,
            cache=self.edit_cache(),
            flow_update=self.flow_update,
            fusion_first_step=self.steps - self.fusion_steps if self.fusion_steps and self.fusion_weight else None,
            fusion_weight=self.fusion_weight,
            fusion_tolerance=self.fusion_tolerance,
        )


@dataclass(frozen=True)
class EngineSettings:
    guidance_scale: float = 7.5
    injection: str = "anchor+prev"
    latent_update: bool = True
    update_weight: float = 100.0
    update_last_step: int = 25  # K_u: steps 0..K_u inclusive get the update
    max_batch: int = 1
    seed: int = 0
    anchor_refresh: int = 0  # K > 0: positions K, 2K, ... become the anchor of the positions after them
    cache: CacheSchedule = CacheSchedule()  # step caching's full steps (step_cache.py); off by default
    # Beyond the paper (steps.py): the flow-aware update; the fusion at steps fusion_first_step.. (None: off).
    flow_update: bool = False
    fusion_first_step: int | None = None
    fusion_weight: float = 0.5
    fusion_tolerance: float = 0.0

    def fuses(self, position: int, step: int) -> bool:
        """Whether the frame at `position` (edit order) gets the flow fusion at `step`."""
        return position > 0 and self.fusion_first_step is not None and step >= self.fusion_first_step

    @property
    def keeps_x0(self) -> bool:
        """Whether the previous frame's x̂0 is kept per step (the update or the fusion reads it)."""
        return self.latent_update or self.fusion_first_step is not None

    @property
    def uses_flow(self) -> bool:
        return (self.latent_update and self.flow_update) or self.fusion_first_step is not None

    @property
    def branches(self) -> int:
        # g = 1 makes the unconditional branch cancel out, so it is not computed.
        return 1 if self.guidance_scale == 1 else 2

    @property
    def sources(self) -> tuple[str, ...]:
        """What the frames after the anchor attend to (`sources.INJECTION_SOURCES`)."""
        return INJECTION_SOURCES[self.injection]

    @property
    def uses_anchor(self) -> bool:
        return ANCHOR in self.sources

    @property
    def uses_prev(self) -> bool:
        """Whether the previous-frame store is used: one rolling slot, or one slot per frame for the
        random-earlier ablation."""
        return PREVIOUS in self.sources or RANDOM_EARLIER in self.sources

    @property
    def random_earlier(self) -> bool:
        return RANDOM_EARLIER in self.sources

    def refreshes(self, position: int) -> bool:
        """Whether the frame at `position` (edit order) becomes the anchor of the frames after it."""
        k = self.anchor_refresh
        return k > 0 and position > 0 and position % k == 0 and self.uses_anchor
