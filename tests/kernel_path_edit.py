"""Run by tests/test_kernel_paths.py in a fresh process, under the ATEN_CPU_CAPABILITY it is given
(torch picks its SIMD kernels once, at import): three clips edited alone and together, as one
editor call of `pix2video run` edits them, the decoded uint8 frames written to an .npz.

    python tests/kernel_path_edit.py MODEL OUT.npz
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from fixtures.clips import moving_shapes
from pipeline.method.editor import EditConfig, Pix2Video
from pipeline.models.loading import load_diffusion_models

SIZE, FRAMES, STEPS, CLIPS = 64, 3, 2, 3
PROMPTS = ["a watercolor painting", "neon lights"]


def main(model: str, out: str) -> None:
    torch.set_num_threads(1)  # what an editor actor with one CPU runs (pipeline.stages.numerics.pin_numerics)
    editor = Pix2Video(load_diffusion_models(model, device="cpu"))
    config = EditConfig(steps=STEPS)
    videos = []
    for seed in range(CLIPS):
        frames = moving_shapes(FRAMES, SIZE, SIZE, seed=seed)
        depth = [np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)] * FRAMES
        video = editor.prepare(frames, depth, video_id=f"clip-{seed}")
        videos.append((video, editor.invert(video, "shapes", config), PROMPTS))
    arrays = {"capability": np.array(torch.backends.cpu.get_cpu_capability())}
    together = editor.edit_many(videos, config)
    for i, (video, zT, prompts) in enumerate(videos):
        (alone,) = editor.edit_many([(video, zT, prompts)], config)
        for p in range(len(prompts)):
            arrays[f"alone-{i}-{p}"] = np.stack(list(editor.decode(alone[p])))
            arrays[f"together-{i}-{p}"] = np.stack(list(editor.decode(together[i][p])))
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
