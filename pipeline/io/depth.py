"""Depth files: one `<name>.npy` per frame (the `--depth` folder of `edit`), any resolution, larger =
nearer; the editor resizes and normalises them (docs/METHOD.md, step 2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import InputError, first_line


def load_depth_folder(folder: str | os.PathLike, names: Sequence[str]) -> list[np.ndarray]:
    """Load one ``<name>.npy`` per frame name as a float32 2-D depth map (``[1,h,w]`` is squeezed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: depth folder does not exist; check the path")
    paths = [folder / f"{name}.npy" for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(
            f"{missing[0]}: depth map missing ({len(missing)} of {len(paths)} frames have no "
            f"<name>.npy); write one .npy per frame"
        )
    depth = []
    for p in paths:
        try:
            array = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - np.load raises ValueError, OSError, EOFError, ...
            raise InputError(f"{p}: unreadable depth map ({first_line(exc)}); rewrite it with np.save") from None
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise InputError(
                f"{p}: depth map must be a 2-D numeric array (or [1,h,w]), got {array.dtype} {array.shape}"
            )
        if np.iscomplexobj(array):  # casting would drop the imaginary part with only a warning
            raise InputError(f"{p}: depth map is complex ({array.dtype}); save real depth values (e.g. float32)")
        with np.errstate(over="ignore"):
            array = array.astype(np.float32, copy=False)  # float64 beyond float32's range becomes inf
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:  # NaN makes the map flat, inf makes the frames black
            raise InputError(
                f"{p}: depth map holds {bad} non-finite value(s) (NaN or inf, or beyond float32); "
                "fill or clip them (e.g. np.nan_to_num) and save again"
            )
        depth.append(array)
    return depth
