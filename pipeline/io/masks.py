"""Edit masks: where a local edit may change the video (white) and where it must keep the input (black).

A mask input is a folder of images, one per frame, sorted by name like a frames folder, or a mask
video; local path or any fsspec URL (`s3://bucket/masks/`, `s3://bucket/mask.mp4`). It must match the
clip it masks: one mask per frame, the clip's own size (before the edit's resize), something white
somewhere, and black and white rather than grey (an antialiased or lossy-coded edge is fine). The
method's blending (`pipeline.method.blend`) takes the binary mask at the working size that
`read_mask` returns.
"""

from __future__ import annotations

import io
import os
from typing import Any

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.errors import InputError, first_line

# pipeline.io.video is imported where it is used, so that its read_frames is looked up when called:
# tests replace it to check that nothing reads a video before a bad flag is refused.

# A mask is "binary-ish" when at most this share of its pixels is grey (between 10 % and 90 % white):
# antialiased edges and H.264 ringing around a shape stay well below it (a 20-pixel-wide object's
# edge is under 1 % of a 128² frame), a photograph or a soft matte is far above it.
MAX_GREY_SHARE = 0.05
_GREY = (0.1, 0.9)


def read_mask(
    src: str | os.PathLike,
    *,
    num_frames: int,
    size: tuple[int, int],
    working_size: tuple[int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """The mask at `src` as bool [N,H,W], checked against its clip and resized to `working_size`.

    `num_frames`: the clip's frame count; `size`: the clip's own (width, height), which every mask
    frame must have; `working_size`: (width, height) the edit runs at (default `size`); the mask is
    resized with area averaging and thresholded at half. Every problem is one InputError line that
    names the mask input."""
    label = os.fspath(src)
    grey = _load(label, storage_options)
    n, h, w = grey.shape
    if n != num_frames:
        raise InputError(f"{label}: mask has {n} frame(s) but the clip has {num_frames}; give one mask per frame")
    if (w, h) != tuple(size):
        raise InputError(f"{label}: mask is {w}x{h} but the clip is {size[0]}x{size[1]}; give masks of the clip's size")
    check_mask(grey, label)
    binary = grey >= 0.5
    if working_size is None or tuple(working_size) == (w, h):
        return binary
    return resize_mask(binary, *working_size)


def check_mask(grey: np.ndarray, label: str) -> None:
    """Refuse an empty mask and one that is not black and white (`MAX_GREY_SHARE`)."""
    if not (grey >= 0.5).any():
        raise InputError(f"{label}: mask is empty (no white pixel in any frame); white marks what to edit")
    share = float(((grey > _GREY[0]) & (grey < _GREY[1])).mean())
    if share > MAX_GREY_SHARE:
        raise InputError(
            f"{label}: mask is not black and white ({share:.0%} of its pixels are grey); "
            "give a binary mask, white = edit"
        )


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """bool [N,H,W] -> bool [N,height,width]: area-averaged coverage, thresholded at half."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[:, None]
    m = F.interpolate(m, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return (m[:, 0] >= 0.5).numpy()


def _load(label: str, storage_options: dict[str, Any] | None) -> np.ndarray:
    """float32 [N,H,W] in [0,1], one grey frame per mask frame (RGB masks: the mean of the channels)."""
    from pipeline.io.video import read_frames

    if "://" in label and not label.startswith("file://"):
        frames = _read_remote(label, storage_options or {})
    else:
        try:
            frames = read_frames(label).frames
        except InputError as e:
            raise InputError(f"mask {first_line(e)}") from None
    return frames.astype(np.float32).mean(axis=-1) / 255.0


def _read_remote(url: str, options: dict[str, Any]) -> np.ndarray:
    """A remote mask video, or a remote folder of images (listed, fetched, sorted by name)."""
    from pipeline.io.formats import IMAGE_EXTENSIONS
    from pipeline.io.video import _natural_key, read_frames

    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        is_dir = fs.isdir(path)
    except (OSError, ValueError, ImportError) as e:
        raise InputError(f"{url}: cannot open the mask ({first_line(e)}); check the URL") from None
    if not is_dir:
        if not fs.exists(path):
            raise InputError(f"{url}: no such mask file or folder; check the URL")
        with fs.open(path, "rb") as f:
            try:
                return read_frames(f).frames
            except InputError as e:
                raise InputError(f"mask {first_line(e)}") from None
    names = [p for p in fs.ls(path, detail=False) if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS]
    names = [p for p in names if not os.path.basename(p).startswith(".")]
    if not names:
        raise InputError(f"{url}: mask folder has no images; give one PNG per frame")
    names.sort(key=lambda p: (_natural_key(os.path.basename(p)), p))
    blobs = fs.cat(names, on_error="return")  # one request per file, concurrent on object stores
    out = []
    for name in names:
        data = blobs.get(name, blobs.get(fs._strip_protocol(name))) if isinstance(blobs, dict) else blobs
        if data is None or isinstance(data, Exception):
            raise InputError(f"{url}: mask frame {os.path.basename(name)} unreadable ({first_line(data)})")
        try:
            with Image.open(io.BytesIO(data)) as image:
                out.append(np.asarray(image.convert("RGB")))
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise InputError(f"{url}: mask frame {os.path.basename(name)} is not an image ({first_line(e)})") from None
    if len({a.shape for a in out}) > 1:
        raise InputError(f"{url}: mask frames differ in size; give masks of the clip's size")
    return np.stack(out)
