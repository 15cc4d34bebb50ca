"""What the frames after the anchor attend to, per injection variant: names only (no torch), so that the
method's options (`config.py`), and the command line built from them, read them without loading torch."""

from __future__ import annotations

# Names of the recorded features a frame after the anchor can attend to (K and V of its decoder
# self-attention layers, in this order; its own tokens are never among them).
ANCHOR = "anchor"  # the anchor frame's, at the same step and branch
PREVIOUS = "previous"  # the frame edited just before, at the same step and branch (the anchor for frame 1)
RANDOM_EARLIER = "random earlier"  # one earlier frame drawn per frame (`injection.random_sources`)

# The injection variants (paper, Fig. 5 and Table 1): what each one's later frames attend to, in
# K/V order. The first is the method; "none" is per-frame editing (ordinary attention everywhere).
INJECTION_SOURCES: dict[str, tuple[str, ...]] = {
    "anchor+prev": (ANCHOR, PREVIOUS),
    "anchor": (ANCHOR,),
    "prev": (PREVIOUS,),
    "random": (ANCHOR, RANDOM_EARLIER),
    "none": (),
}
