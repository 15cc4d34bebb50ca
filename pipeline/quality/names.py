"""The metrics' names and titles: light (no torch), for the tables' schema and the command line."""

from __future__ import annotations

METRIC_NAMES = ("clip_text", "clip_image", "pixel_mse")
# For tables and pages: the paper's column titles, and which way is better.
METRIC_TITLES = {"clip_text": "CLIP-Text ↑", "clip_image": "CLIP-Image ↑", "pixel_mse": "Pixel-MSE ↓"}
# The same in plain ASCII, for images drawn with Pillow's default font (which has no arrows).
PLOT_TITLES = {
    "clip_text": "CLIP-Text (higher = better)",
    "clip_image": "CLIP-Image (higher = better)",
    "pixel_mse": "Pixel-MSE (lower = better)",
}
