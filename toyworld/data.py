"""The toy world's training and held-out frame sets, rendered once and cached as .npz.

Training scenes use seeds 0, 1, 2, ...; held-out scenes (every figure in BENCHMARKS.md) use seeds from
HELDOUT_SEED on, which no model ever sees during training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io.atomic import atomic_path
from toyworld.world import ToyScene, caption, random_scene, render_frame

HELDOUT_SEED = 1_000_000
TRAIN_CLIPS = 1200
HELDOUT_CLIPS = 40
FRAMES_PER_CLIP = 8  # every other frame of a 16-frame clip: more scenes for the same number of frames


@dataclass
class FrameSet:
    frames: np.ndarray  # (N,H,W,3) uint8
    disparity: np.ndarray  # (N,H,W) float16, 1/distance (larger = nearer)
    ids: np.ndarray  # (N,H,W) int8 object index, -1 floor/backdrop
    captions: list[str]
    colours: list[list[str]]  # per frame, colour of object 0, 1, ...
    textures: list[list[str]]  # per frame, texture kind of object 0, 1, ...
    clip: np.ndarray  # (N,) index of the scene each frame comes from

    def __len__(self) -> int:
        return len(self.frames)


def render_frames(scene: ToyScene, ts: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rgbs, disp, ids = [], [], []
    for t in ts:
        rgb, d, i, _ = render_frame(scene, t)
        rgbs.append(rgb)
        disp.append((1.0 / d).astype(np.float16))
        ids.append(i)
    return np.stack(rgbs), np.stack(disp), np.stack(ids), [caption(scene, t) for t in ts]


def _render_set(seeds: range, frames_per_clip: int) -> FrameSet:
    out: dict[str, list] = {"frames": [], "disparity": [], "ids": [], "captions": [], "colours": [], "clip": []}
    out["textures"] = []
    for k, seed in enumerate(seeds):
        scene = random_scene(seed)
        step = max(1, scene.frames // frames_per_clip)
        ts = list(range(0, scene.frames, step))[:frames_per_clip]
        f, d, i, c = render_frames(scene, ts)
        out["frames"].append(f)
        out["disparity"].append(d)
        out["ids"].append(i)
        out["captions"] += c
        out["colours"] += [[o.colour for o in scene.objects]] * len(ts)
        out["textures"] += [[o.texture for o in scene.objects]] * len(ts)
        out["clip"] += [k] * len(ts)
    return FrameSet(
        frames=np.concatenate(out["frames"]),
        disparity=np.concatenate(out["disparity"]),
        ids=np.concatenate(out["ids"]),
        captions=out["captions"],
        colours=out["colours"],
        textures=out["textures"],
        clip=np.array(out["clip"]),
    )


def _textures(seeds: range, clip: np.ndarray) -> list[list[str]]:
    """Each frame's object textures, from its scene (drawn again: the cache does not keep them)."""
    kinds = {k: [o.texture for o in random_scene(seeds[k]).objects] for k in np.unique(clip)}
    return [kinds[k] for k in clip]


def _cached(path: Path, seeds: range, frames_per_clip: int) -> FrameSet:
    if path.exists():
        z = np.load(path, allow_pickle=True)
        return FrameSet(
            frames=z["frames"],
            disparity=z["disparity"],
            ids=z["ids"],
            captions=list(z["captions"]),
            colours=[list(c) for c in z["colours"]],
            textures=_textures(seeds, z["clip"]),
            clip=z["clip"],
        )
    fs = _render_set(seeds, frames_per_clip)
    colours = np.empty(len(fs.colours), dtype=object)
    colours[:] = [tuple(c) for c in fs.colours]
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez adds .npz to a name without it
        np.savez(
            tmp,
            frames=fs.frames,
            disparity=fs.disparity,
            ids=fs.ids,
            captions=np.array(fs.captions, dtype=object),
            colours=colours,
            clip=fs.clip,
        )
    return fs


def training_set(workdir: str | os.PathLike, clips: int = TRAIN_CLIPS) -> FrameSet:
    return _cached(Path(workdir) / "data" / f"train-{clips}x{FRAMES_PER_CLIP}.npz", range(clips), FRAMES_PER_CLIP)


def heldout_set(workdir: str | os.PathLike, clips: int = HELDOUT_CLIPS) -> FrameSet:
    seeds = range(HELDOUT_SEED, HELDOUT_SEED + clips)
    return _cached(Path(workdir) / "data" / f"heldout-{clips}x{FRAMES_PER_CLIP}.npz", seeds, FRAMES_PER_CLIP)
