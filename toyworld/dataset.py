"""A toy-world dataset on disk: held-out clips as mp4, a JSON-lines manifest with prompts and labels.

Each clip gets two target prompts that change one attribute of its largest object: its colour, and
its texture ("a red striped ball ..." -> "a blue striped ball ...", "a red dotted ball ..."). Labels
carry the clip's caption, its seed (to re-render the ground truth) and what the edits change.
"""

from __future__ import annotations

import json
import os

from pipeline.io.atomic import atomic_path
from toyworld.benchmark import BENCH_SEED, edit_task

FPS = 8.0


def write_toy_dataset(
    folder: str | os.PathLike, videos: int = 4, frames: int = 16, first_seed: int = BENCH_SEED
) -> str:
    """Render `videos` held-out clips into `folder`/data/ and write `folder`/manifest.jsonl; returns
    the manifest's path. Existing clips are kept (rendering is deterministic)."""
    from pipeline.io.video import write_video

    folder = os.fspath(folder)
    data = os.path.join(folder, "data")
    os.makedirs(data, exist_ok=True)
    lines = []
    for i in range(videos):
        seed = first_seed + i
        colour = edit_task(seed, frames, "colour")
        texture = edit_task(seed, frames, "texture", colour.clip)
        name = f"toy-{seed}.mp4"
        path = os.path.join(data, name)
        if not os.path.exists(path):
            write_video(path, colour.clip.frames, FPS)
        obj = colour.clip.scene.objects[colour.obj]
        lines.append(
            {
                "video": f"data/{name}",
                "prompt": [colour.target_prompt, texture.target_prompt],
                "scene_caption": colour.source_prompt,
                "toy_seed": seed,
                "edited_object": obj.shape,
                "colour_edit": f"{obj.colour}->{colour.target}",
                "texture_edit": f"{obj.texture}->{texture.target}",
            }
        )
    manifest = os.path.join(folder, "manifest.jsonl")
    with atomic_path(manifest) as tmp:
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest
