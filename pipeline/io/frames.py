"""Frame sizes: parsing ``WxH``, the default working size, and resizing.

Stable Diffusion 2's VAE downsamples by 8 and the UNet by a further 8 (three down blocks), so the
latent grid only lines up with the image when both sides are multiples of 64. Other models have other
factors: `pipeline.models.sizes` reads a model's multiple and working size from its configs and passes
them here. Every size that reaches the model goes through :func:`parse_size` or :func:`default_size`.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from pipeline.errors import InputError

SIZE_MULTIPLE = 64  # SD2's: VAE factor 8 x 2**3 UNet downsamplings
DEFAULT_SHORT_SIDE = 512  # SD2-depth was trained at 512 px
# Larger than this per side is no working size (4096x4096 RGB frames are 48 MiB each before the
# models' activations): a typo like 64000x64000 would otherwise end in an out-of-memory traceback.
MAX_SIDE = 4096

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(text: str, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Parse ``"512x384"`` into ``(width, height)``; both must be positive multiples of `multiple`."""
    match = _SIZE_RE.match(str(text))
    if match is None:
        raise InputError(f"size {text!r}: expected WIDTHxHEIGHT such as 512x384")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        example = f"{8 * multiple}x{6 * multiple}"
        raise InputError(f"size {width}x{height}: width and height must be multiples of {multiple} (e.g. {example})")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InputError(f"size {width}x{height}: at most {MAX_SIDE} per side (the method works at 512 to 1024)")
    return width, height


def _round_to_multiple(value: float, multiple: int) -> int:
    # Round half up (not Python's banker's rounding) so the result does not depend on parity.
    return max(multiple, int(value / multiple + 0.5) * multiple)


def default_size(
    width: int, height: int, short_side: int = DEFAULT_SHORT_SIDE, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """The working size for a ``width`` x ``height`` video: `short_side` (512) on the short side, aspect
    kept.

    Each side is rounded to the nearest multiple of `multiple` (64; at least that), so the aspect ratio
    is only approximately kept: 640x360 -> 896x512, 1080x1920 -> 512x896, 640x480 -> 704x512.
    The long side stays within MAX_SIDE, as a typed --size must (a 16x2048 strip becomes 64x4096, not
    64x8192): the short side is then smaller than `short_side`.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"default_size: width and height must be positive, got {width}x{height}")
    scale = min(short_side / min(width, height), MAX_SIDE / max(width, height))
    # Rounding may pass MAX_SIDE when it is no multiple of `multiple`: one multiple less then.
    return tuple(  # type: ignore[return-value]
        min(_round_to_multiple(side * scale, multiple), MAX_SIDE // multiple * multiple) for side in (width, height)
    )


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize uint8 ``[N, H, W, 3]`` frames to ``[N, height, width, 3]`` with PIL bicubic.

    Returns ``frames`` itself (no copy) when it already has that size.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"resize_frames: expected uint8 [N,H,W,3], got {frames.dtype} {frames.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"resize_frames: width and height must be positive, got {width}x{height}")
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((width, height), Image.BICUBIC))
    return out
