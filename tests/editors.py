"""Editor actors for tests: the product's `EditorActor` with one method overridden, put in place with
`monkeypatch.setattr(actors.editor, "EditorActor", ...)`. Each class is made inside a function, so Ray
(cloudpickle) sends it to the workers by value: the workers need not import this module."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from actors.editor import EditorActor


def keeping_frames(folder: Path) -> type[EditorActor]:
    """An editor that also saves each unit's decoded frames (uint8, before H.264) as `folder/<key>.npy`,
    so tests compare what the method computed rather than the encoder's decisions about it."""

    class KeepingFrames(EditorActor):
        def _encode(self, unit, frames: Sequence[np.ndarray], path: str, meta) -> None:
            frames = list(frames)
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{unit.key}.npy", np.stack(frames))
            super()._encode(unit, frames, path, meta)

    return KeepingFrames


def crashing_after_output(flag: Path) -> type[EditorActor]:
    """An editor whose process dies the hard way (as an OOM kill would) right after its first mp4 is in
    place and before its marker: the first process to get there creates `flag` and exits; later ones
    (Ray's restart, other editors) go on."""

    class CrashingAfterOutput(EditorActor):
        def _put_output(self, local: str, url: str) -> None:
            super()._put_output(local, url)
            try:
                fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)

    return CrashingAfterOutput
