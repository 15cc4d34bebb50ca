"""Issue 24 item 1: the same frames give the same mp4 bytes, whatever is in memory, on every x86-64 CPU.

What went wrong: x264's AVX-512 macroblock-tree kernel reads past a row of macroblocks whose count
is not a multiple of 8, into memory nobody wrote (pipeline/io/video.py, ENCODE_COLUMNS). On an
AVX-512 CPU the same 64x64 frames gave other files for other file names and other MALLOC_PERTURB_
values; `write_video` now encodes every width as a multiple of 128 columns and crops in the stream.

Three tests, one per way a machine can make bytes differ. The first fills the memory x264 reads
without writing with other bytes in each process (MALLOC_PERTURB_) and moves the heap around (file
names of other lengths, other allocations before each encode): it fails on an AVX-512 CPU without
the fix, and on any CPU it fails for any encoder path that reads bytes nobody wrote. The second
writes what CPUs with fewer instruction sets write (x264's `asm` option, restricted to the sets this
CPU has: SSSE3, SSE4.2, AVX, AVX2 and AVX-512 where present) and wants the same bytes from each.
Below SSSE3 (an SSE2-only x86-64) x264's code writes other bytes; numpy, whose baseline is
x86-64-v2, does not run on such a CPU, so neither does this project. The third encodes on one CPU
and on all of them: x264 takes its thread count from the cores it may use, and the bits depend on
it (a 512x512 clip had other bytes with 1, 2, 3, 4 and 8 threads; now fixed, video.X264_THREADS).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from encode_repeat import clip  # the helper script's clip: the same frames in every test
from numpy._core._multiarray_umath import __cpu_features__ as CPU

from pipeline.io import video

ROOT = Path(__file__).resolve().parent.parent

# Widths of 4, 6 and 13 macroblocks (none a multiple of 8; 64x64 is the tiny model's clip), and one
# whose width is: 512x512, the default size, which the fix leaves as it was.
SIZES = [(64, 64), (96, 80), (200, 120)]
PERTURB = ["", "1", "90", "165", "255"]  # "": glibc's default (no filling)
# x264's names for instruction-set levels, with numpy's name for what each needs of the CPU.
LEVELS = [("SSSE3", "SSSE3"), ("SSE4.2", "X86_V2"), ("AVX", "AVX"), ("AVX2", "X86_V3"), ("AVX512", "AVX512_SKX")]


def _repeat(
    folder: Path, perturb: str, sizes: list[tuple[int, int]] = SIZES, repeats: int = 6, cpus: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MALLOC_PERTURB_", None)
    if perturb:
        env["MALLOC_PERTURB_"] = perturb
    folder.mkdir()
    script = [sys.executable, str(ROOT / "tests" / "encode_repeat.py"), str(folder), str(repeats), *cpus]
    done = subprocess.run(
        [*script, *(f"{w}x{h}" for w, h in sizes)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_same_frames_give_the_same_bytes_whatever_is_in_memory(tmp_path: Path) -> None:
    """5 processes x 6 encodes per size, each under another heap filling and layout: one file."""
    runs = [_repeat(tmp_path / f"perturb-{value or 'none'}", value) for value in PERTURB]
    for w, h in SIZES:
        files = collections.Counter(digest for run in runs for digest in run[f"{w}x{h}"])
        assert sum(files.values()) == 30
        assert len(files) == 1, (f"{w}x{h}", sorted(files.values()))


def test_the_bytes_do_not_depend_on_the_number_of_cores(tmp_path: Path) -> None:
    """x264's bits depend on its thread count, which it would take from the CPUs the process may use;
    write_video fixes it (video.X264_THREADS). Here: the same frames on 1 CPU and on all this process
    may use (on a 1-CPU machine both are 1 and the test shows nothing; the suite runs on 2 or more)."""
    sizes = [(512, 512), (640, 360)]  # 64x64 is one thread's work whatever the count
    one = _repeat(tmp_path / "one-cpu", "", sizes, repeats=1, cpus=("--cpus", "1"))
    every = _repeat(tmp_path / "every-cpu", "", sizes, repeats=1)
    assert one == every


def _encode(tmp_path: Path, frames: np.ndarray, level: str) -> str:
    path = tmp_path / f"{level}-{frames.shape[2]}x{frames.shape[1]}.mp4"
    h, w = frames.shape[1:3]
    video._encode_h264(path, "mp4", frames[0], iter(frames[1:]), Fraction(8), w, h, video.DEFAULT_CRF, f"asm={level}")
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_every_instruction_set_level_writes_the_same_bytes(tmp_path: Path) -> None:
    levels = [name for name, needs in LEVELS if CPU.get(needs)]
    assert levels[:2] == ["SSSE3", "SSE4.2"]  # numpy's baseline: every CPU this project runs on
    for w, h in [*SIZES, (512, 512)]:
        frames = clip(w, h)
        files = {level: _encode(tmp_path, frames, level) for level in levels}
        assert len(set(files.values())) == 1, (f"{w}x{h}", files)
        # and that is what write_video writes with x264's own choice of kernels
        plain = video.write_video(tmp_path / f"plain-{w}x{h}.mp4", iter(frames), fps=8)
        assert hashlib.sha1(plain.read_bytes()).hexdigest() == files[levels[0]]


def test_the_encoded_width_is_whole_groups_of_eight_macroblocks() -> None:
    assert [video.encode_width(w) for w in (64, 128, 130, 200, 512, 720, 1920)] == [128, 128, 256, 256, 512, 768, 1920]
