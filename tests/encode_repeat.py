"""Run by tests/test_encode_determinism.py in a fresh process, under the MALLOC_PERTURB_ it is given
(glibc then fills every block malloc hands out with that byte, so a byte the encoder reads without
having written it differs from one value to the next): the same frames written by `write_video`
again and again, under file names of other lengths and with other allocations in between (other
heap layouts); prints a JSON object mapping each size to the SHA-1 of every file written. `--cpus N`: on
the first N of the CPUs this process may use only (what x264 counts as the machine's cores).

    python tests/encode_repeat.py FOLDER REPEATS [--cpus N] WxH [WxH ...]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from fixtures.clips import moving_shapes
from pipeline.io.video import write_video


def clip(width: int, height: int) -> np.ndarray:
    """Four frames of moving shapes with fixed noise (a clip the tiny model writes looks like this:
    motion everywhere, so that the encoder's motion search and macroblock tree have work)."""
    frames = moving_shapes(4, width, height, seed=5).astype(np.int16)
    noise = np.random.default_rng(0).integers(-20, 20, frames.shape)
    return np.clip(frames + noise, 0, 255).astype(np.uint8)


def main(folder: str, repeats: int, sizes: list[str]) -> None:
    hashes: dict[str, list[str]] = {}
    held = []
    for size in sizes:
        width, height = (int(v) for v in size.split("x"))
        frames = clip(width, height)
        for i in range(repeats):
            held.append(bytearray(977 * (i + 1)))  # moves where the encoder's buffers land
            path = write_video(Path(folder) / f"{'n' * (1 + 5 * i)}-{size}.mp4", iter(frames), fps=8)
            hashes.setdefault(size, []).append(hashlib.sha1(path.read_bytes()).hexdigest())
            path.unlink()
    print(json.dumps(hashes))


if __name__ == "__main__":
    sizes = sys.argv[3:]
    if sizes[:1] == ["--cpus"]:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(sizes[1])])
        sizes = sizes[2:]
    main(sys.argv[1], int(sys.argv[2]), sizes)
