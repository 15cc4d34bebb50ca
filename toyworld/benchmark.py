"""The paper's Table 1 on held-out toy clips, with the ground-truth measures the toy world adds.

For each held-out scene (seeds the models never saw) one object's colour is edited: the source
prompt is the clip's caption, the target prompt the same caption with that object's colour replaced
("a red striped ball ..." -> "a blue striped ball ..."). The clip is inverted once and edited with
every variant; each edit is scored with the paper's three metrics (CLIP-Text, CLIP-Image, Pixel-MSE;
toy CLIP) and with `toyworld.measures` (edit accuracy, structure IoU, true-flow warp error).

Also here: `sample_accuracy`, the text-to-image check (from noise, true depth given: is the prompted
colour inside each object's mask?).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toyworld.measures import score_edit
from toyworld.world import COLOURS, ToyClip, caption, colour_of, random_scene, render

log = logging.getLogger(__name__)

BENCH_SEED = 2_000_000  # held-out scenes for edits (training uses 0.., data.heldout_set 1_000_000..)


@dataclass(frozen=True)
class Variant:
    label: str
    injection: str
    latent_update: bool
    sdedit_strength: float | None = None  # set: the per-frame SDEdit baseline (`Pix2Video.sdedit`) instead


SDEDIT_STRENGTH = 0.8  # the paper's per-frame baseline; also diffusers' depth2img default strength

VARIANTS = (
    Variant("Pix2Video (anchor+prev, update)", "anchor+prev", True),
    Variant("anchor only", "anchor", True),
    Variant("prev only", "prev", True),
    Variant("anchor+random", "random", True),
    Variant("none (per-frame)", "none", False),
    Variant("update off (anchor+prev)", "anchor+prev", False),
    Variant(f"per-frame SDEdit (strength {SDEDIT_STRENGTH:g})", "none", False, sdedit_strength=SDEDIT_STRENGTH),
)


@dataclass
class EditTask:
    clip: ToyClip
    obj: int
    target_colour: str
    source_prompt: str
    target_prompt: str


def edit_task(seed: int, frames: int = 16) -> EditTask:
    """A held-out clip and a colour edit of its largest object."""
    scene = random_scene(seed, frames=frames)
    clip = render(scene)
    obj = int(np.argmax(clip.masks.sum(axis=(0, 2, 3))))
    rng = np.random.default_rng(seed)
    old = scene.objects[obj].colour
    target = str(rng.choice([c for c in COLOURS if c != old]))
    return EditTask(clip, obj, target, clip.captions[0], caption(scene.with_object(obj, colour=target)))


def edit_variants(
    editor: Any,
    task: EditTask,
    depth: Sequence[np.ndarray],
    variants: Sequence[Variant] = VARIANTS,
    config: Any | None = None,
    scorer: Any | None = None,
) -> list[dict[str, Any]]:
    """Invert once, edit with every variant (`config`, an EditConfig, with the variant's injection and
    update; SDEdit variants from the clean latents, noised with `config.seed`), score each edit. One
    row per variant (+ 'input' first)."""
    from dataclasses import replace

    from pipeline.method.editor import EditConfig

    clip = task.clip
    video = editor.prepare(clip.frames, depth, video_id=f"toy-{clip.scene.seed}")
    base = config or EditConfig()
    zT = editor.invert(video, task.source_prompt, base)
    rows = [_row("input video", clip.frames, task, scorer)]
    for v in variants:
        if v.sdedit_strength is not None:
            latents = editor.sdedit(video, [task.target_prompt], base, strength=v.sdedit_strength)[0]
        else:
            cfg = replace(base, injection=v.injection, latent_update=v.latent_update)
            latents = editor.edit(video, zT, [task.target_prompt], cfg)[0]
        frames = np.stack(list(editor.decode(latents)))
        rows.append(_row(v.label, frames, task, scorer))
        rows[-1]["frames"] = frames
    return rows


def _row(label: str, frames: np.ndarray, task: EditTask, scorer: Any | None) -> dict[str, Any]:
    c = task.clip
    row: dict[str, Any] = {"variant": label, "seed": c.scene.seed, "target": task.target_prompt}
    row.update(score_edit(frames, c.masks, c.ids, c.flow, task.obj, task.target_colour).row())
    if scorer is not None:
        from pipeline.quality.metrics import video_metrics

        m = video_metrics(frames, task.target_prompt, scorer, input_frames=c.frames)
        row.update(m.row())
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every numeric column per variant, in first-seen order."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        d = out.setdefault(r["variant"], {})
        for k, v in r.items():
            if isinstance(v, (int, float)) and k != "seed" and v is not None and np.isfinite(v):
                d.setdefault(k, []).append(float(v))
    table = []
    for k, d in out.items():
        clips = max((len(x) for x in d.values()), default=0)
        table.append({"variant": k, "clips": clips, **{m: float(np.mean(x)) for m, x in d.items()}})
    return table


@torch.no_grad()
def sample_accuracy(
    editor: Any,
    seeds: Sequence[int],
    steps: int = 50,
    guidance_scale: float = 7.5,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Text-to-image from noise, true depth given: share of objects drawn in their prompted colour
    (read inside the true mask), over frame 0 of each scene."""
    from pipeline.method.editor import EditConfig

    hits, total = 0, 0
    for n, seed in enumerate(seeds):
        scene = random_scene(seed, frames=1)
        clip = render(scene)
        video = editor.prepare(clip.frames, list(clip.disparity), video_id=f"sample-{seed}")
        g = torch.Generator().manual_seed(seed)
        zT = torch.randn(video.latents.shape, generator=g).to(video.latents)
        cfg = EditConfig(steps=steps, guidance_scale=guidance_scale, injection="none", latent_update=False)
        frame = next(iter(editor.decode(editor.edit(video, zT, [clip.captions[0]], cfg)[0])))
        for i, o in enumerate(scene.objects):
            mask = clip.masks[0, i]
            if mask.sum() >= 20:
                total += 1
                hits += colour_of(frame[mask]) == o.colour
        if progress:
            progress(n)
    return {"samples": total, "colour_accuracy": hits / max(total, 1)}


GT_COLUMNS = ("edit_accuracy", "structure_iou", "warp_error")
GT_TITLES = {"edit_accuracy": "Edit acc. ↑", "structure_iou": "Mask IoU ↑", "warp_error": "Warp err. (true flow) ↓"}


def toy_ablation(
    editor: Any,
    seeds: Sequence[int],
    *,
    depth: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
    scorer: Any | None = None,
    config: Any | None = None,
    frames: int = 16,
    variants: Sequence[Variant] = VARIANTS,
    on_clip: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every variant on the colour edit of each held-out scene in `seeds`; one row per (clip, variant)
    (plus the input's), without the frames. `depth(frames)` estimates depth (e.g. the toy DPT, as the
    pipeline does); None uses the true disparity."""
    rows: list[dict[str, Any]] = []
    for n, seed in enumerate(seeds):
        task = edit_task(seed, frames)
        maps = list(task.clip.disparity) if depth is None else depth(task.clip.frames)
        clip_rows = edit_variants(editor, task, maps, variants, config, scorer)
        if on_clip:
            on_clip(n, clip_rows)
        rows += [{k: v for k, v in r.items() if k != "frames"} for r in clip_rows]
    return rows


def markdown_table(summary: Sequence[dict[str, Any]], title: str) -> str:
    """The ablation summary as a Markdown table: the paper's three metrics, then the ground truth's."""
    paper = [
        ("clip_text", "CLIP-Text ↑", "{:.3f}"),
        ("clip_image", "CLIP-Image ↑", "{:.3f}"),
        ("pixel_mse", "Pixel-MSE ↓", "{:.4f}"),
    ]
    cols = [c for c in paper if any(c[0] in r for r in summary)]
    cols += [(k, GT_TITLES[k], "{:.3f}" if k != "warp_error" else "{:.1f}") for k in GT_COLUMNS]
    header = "| Variant | " + " | ".join(t for _, t, _ in cols) + " |"
    lines = [f"**{title}**", "", header, "|---|" + "---:|" * len(cols)]
    for r in summary:
        cells = [f.format(r[k]) if r.get(k) is not None else "–" for k, _, f in cols]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
