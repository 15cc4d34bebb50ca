"""Step caching's schedule (`step_cache.py` has the hooks): which steps run the whole UNet, and what the
options mean. Light (no torch): EditConfig reads it, and the command line builds its flags from EditConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputError

# What `--cache-interval on` means, and what `auto` runs (BENCHMARKS.md, "Step caching", has the figures
# these come from): for the edit and for the inversion.
ON_INTERVAL = 3
AUTO_INTERVAL = {"edit": 0, "inversion": 0}
DEFAULT_DEPTH = 3  # up-path layers run on cached steps (`StepCache`): SD2's outermost level


def parse_interval(value: Any, name: str, kind: str) -> int:
    """An interval option's value (auto | on | off | a whole number N) as N; 0 and 1 mean off."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return AUTO_INTERVAL[kind]
        if text == "on":
            return ON_INTERVAL
        if text == "off":
            return 0
        if text.isdigit():
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    flag = "--" + name.replace("_", "-")
    raise InputError(f"{flag} must be auto, on, off or a whole number N (a full step every N), got {value!r}")


def warmup_steps(share: Any, steps: int) -> int:
    """`--cache-warmup F` as a number of steps: the first round(F·steps) steps of the edit."""
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
        raise InputError(f"--cache-warmup must be a share of the steps from 0 to below 1, got {share!r}")
    return round(share * steps)


@dataclass(frozen=True)
class CacheSchedule:
    """Which steps run the whole UNet: the first `warmup`, then every `interval`-th from there (0 and 1:
    all of them), and how many outer levels (`depth`) run on the others.

    The warm-up is for the edit, whose first steps (the noisiest) lay out the picture: colour and shape
    are decided there, and a deep feature reused across them is most wrong (BENCHMARKS.md, "Step
    caching")."""

    interval: int = 0
    depth: int = DEFAULT_DEPTH
    warmup: int = 0

    @property
    def active(self) -> bool:
        return self.interval > 1

    def full(self, step: int) -> bool:
        return not self.active or step < self.warmup or (step - self.warmup) % self.interval == 0

    def identity(self) -> tuple:
        """What a result computed under this schedule depends on: () when off, so that off keys (an
        inversion's, a fingerprint's) stay what they were before step caching existed; the warm-up only
        when there is one, for the same reason."""
        if not self.active:
            return ()
        return ("step-cache", self.interval, self.depth, *(("warmup", self.warmup) if self.warmup else ()))
