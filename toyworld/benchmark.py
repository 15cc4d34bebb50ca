"""The paper's Table 1 on held-out toy clips, with the ground-truth measures the toy world adds.

For each held-out scene (seeds the models never saw) the largest object is edited twice: a new colour
("a red striped ball ..." -> "a blue striped ball ...") and a new texture kind whose pattern the
prompt leaves free ("a red striped ball ..." -> "a red dotted ball ..."); the source prompt is the
clip's caption. The clip is inverted once and edited with every variant (Pix2Video, its ablations,
per-frame editing from the same inversion, per-frame SDEdit); each edit is scored with the paper's
three metrics (CLIP-Text, CLIP-Image, Pixel-MSE; toy CLIP) and with `toyworld.measures` (edit
accuracy, structure IoU, true-flow warp error, PSNR outside the object), and the method's row says how
far its frames are from per-frame editing's inside the object.

Also here: `sample_accuracy`, the text-to-image check (from noise, true depth given: does each object
show its prompted colour and texture kind inside its true mask?).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toyworld.measures import score_edit
from toyworld.world import COLOURS, TEXTURES, ToyClip, caption, colour_of, random_scene, render

log = logging.getLogger(__name__)

BENCH_SEED = 2_000_000  # held-out scenes for edits (training uses 0.., data.heldout_set 1_000_000..)


@dataclass(frozen=True)
class Variant:
    label: str
    injection: str
    latent_update: bool
    sdedit_strength: float | None = None  # set: the per-frame SDEdit baseline (`Pix2Video.sdedit`) instead
    # Further EditConfig fields of this variant, as (name, value) pairs (hashable): options beyond the
    # paper are measured as variants of the same edit, from the same inversion.
    config: tuple[tuple[str, Any], ...] = ()


SDEDIT_STRENGTH = 0.8  # the paper's per-frame baseline; also diffusers' depth2img default strength
PER_FRAME = "none (per-frame)"
VARIANTS = (
    Variant("Pix2Video (anchor+prev, update)", "anchor+prev", True),
    Variant("anchor only", "anchor", True),
    Variant("prev only", "prev", True),
    Variant("anchor+random", "random", True),
    Variant(PER_FRAME, "none", False),
    Variant("update off (anchor+prev)", "anchor+prev", False),
    Variant(f"per-frame SDEdit (strength {SDEDIT_STRENGTH:g})", "none", False, sdedit_strength=SDEDIT_STRENGTH),
)


ATTRIBUTES = ("colour", "texture")  # what an edit of the toy benchmark changes


@dataclass
class EditTask:
    """A held-out clip and an edit of one attribute of its largest object."""

    clip: ToyClip
    obj: int
    attribute: str  # "colour" or "texture"
    target: str  # the new colour, or the new texture kind
    source_prompt: str
    target_prompt: str

    @property
    def colour_after(self) -> str:
        """The object's colour once edited (a texture edit keeps it)."""
        return self.target if self.attribute == "colour" else self.clip.scene.objects[self.obj].colour


def edit_task(seed: int, frames: int = 16, attribute: str = "colour", clip: ToyClip | None = None) -> EditTask:
    """A held-out clip and an edit of its largest object: a new colour, or a new texture kind whose
    pattern (angle, phase, the dots' motif) the prompt leaves free ("plain" is never the target).
    `clip`: the scene's clip if it is rendered already."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    clip = clip or render(random_scene(seed, frames=frames))
    scene = clip.scene
    obj = int(np.argmax(clip.masks.sum(axis=(0, 2, 3))))
    old = getattr(scene.objects[obj], attribute)
    if attribute == "colour":
        target = str(np.random.default_rng(seed).choice([c for c in COLOURS if c != old]))
    else:
        target = str(np.random.default_rng([seed, 1]).choice([t for t in TEXTURES if t not in (old, "plain")]))
    edited = scene.with_object(obj, **{attribute: target})
    return EditTask(clip, obj, attribute, target, clip.captions[0], caption(edited))


def edit_variants(
    editor: Any,
    task: EditTask,
    depth: Sequence[np.ndarray],
    variants: Sequence[Variant] = VARIANTS,
    config: Any | None = None,
    scorer: Any | None = None,
    reader: Any | None = None,
) -> list[dict[str, Any]]:
    """Invert once, edit with every variant (`config`, an EditConfig, with the variant's injection and
    update; SDEdit variants from the clean latents, noised with `config.seed`), score each edit. One
    row per variant (+ 'input' first). `reader`: the texture reader, for texture edits."""
    from dataclasses import replace

    from pipeline.method.editor import EditConfig

    clip = task.clip
    video = editor.prepare(clip.frames, depth, video_id=f"toy-{clip.scene.seed}")
    base = config or EditConfig()
    editor.invert(video, task.source_prompt, base)  # once: the variants below find it in the editor's cache
    rows = [_row("input video", clip.frames, task, scorer, reader)]
    for v in variants:
        if v.sdedit_strength is not None:
            latents = editor.sdedit(video, [task.target_prompt], base, strength=v.sdedit_strength)[0]
        else:
            cfg = replace(base, injection=v.injection, latent_update=v.latent_update, **dict(v.config))
            # A variant that changes the inversion (step caching in it) inverts anew; the others get the
            # shared zT back from the video's cache.
            latents = editor.edit(video, editor.invert(video, task.source_prompt, cfg), [task.target_prompt], cfg)[0]
        frames = np.stack(list(editor.decode(latents)))
        rows.append(_row(v.label, frames, task, scorer, reader))
        rows[-1]["frames"] = frames
    _injection_effect(rows, task)
    return rows


def _injection_effect(rows: list[dict[str, Any]], task: EditTask) -> None:
    """On the method's row: mean |per-frame − Pix2Video| inside the edited object (grey levels), what
    the injection and the update change where the edit happens."""
    frames = {r["variant"]: r.get("frames") for r in rows}
    method, per_frame = frames.get(VARIANTS[0].label), frames.get(PER_FRAME)
    if method is None or per_frame is None:
        return
    mask = task.clip.masks[:, task.obj]
    diff = np.abs(method.astype(np.float32) - per_frame.astype(np.float32))[mask]
    rows[[r["variant"] for r in rows].index(VARIANTS[0].label)]["injection_effect"] = float(diff.mean())


def _row(label: str, frames: np.ndarray, task: EditTask, scorer: Any | None, reader: Any | None) -> dict[str, Any]:
    c = task.clip
    row: dict[str, Any] = {"variant": label, "seed": c.scene.seed, "edit": task.attribute, "target": task.target_prompt}
    texture = task.target if task.attribute == "texture" else None
    if texture is None or reader is not None:
        score = score_edit(frames, c.masks, c.ids, c.flow, task.obj, task.colour_after, c.frames, texture, reader)
        row.update(score.row())
    if scorer is not None:
        from pipeline.quality.metrics import video_metrics

        m = video_metrics(frames, task.target_prompt, scorer, input_frames=c.frames)
        row.update(m.row())
    return row


def summarise(rows: Sequence[dict[str, Any]], edit: str | None = None) -> list[dict[str, Any]]:
    """Mean of every numeric column per variant, in first-seen order; `edit`: only that kind's rows."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if edit is not None and r.get("edit") != edit:
            continue
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
    reader: Any | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Text-to-image from noise, true depth given, frame 0 of each scene: the share of objects drawn in
    their prompted colour (read inside the true mask) and, with a texture `reader`, in their prompted
    texture kind."""
    from pipeline.method.editor import EditConfig
    from toyworld.texture import MIN_PIXELS, read_textures

    colour_hits, colour_total, texture_hits, texture_total = 0, 0, 0, 0
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
                colour_total += 1
                colour_hits += colour_of(frame[mask]) == o.colour
            if reader is not None and mask.sum() >= MIN_PIXELS:
                texture_total += 1
                texture_hits += read_textures(reader, frame[None], mask[None])[0] == o.texture
        if progress:
            progress(n)
    out = {"samples": colour_total, "colour_accuracy": colour_hits / max(colour_total, 1)}
    if reader is not None:
        out.update(texture_samples=texture_total, texture_accuracy=texture_hits / max(texture_total, 1))
    return out


def read_objects(frame: np.ndarray, clip: ToyClip, reader: Any | None) -> dict[str, list[bool]]:
    """For frame 0 of `clip`: per visible object, is its prompted colour (and, with a texture reader,
    its prompted texture kind) what the picture shows inside its true mask?"""
    from toyworld.texture import MIN_PIXELS, read_textures

    out: dict[str, list[bool]] = {"colour": [], "texture": []}
    for i, o in enumerate(clip.scene.objects):
        mask = clip.masks[0, i]
        if mask.sum() >= 20:
            out["colour"].append(colour_of(frame[mask]) == o.colour)
        if reader is not None and mask.sum() >= MIN_PIXELS:
            out["texture"].append(read_textures(reader, frame[None], mask[None])[0] == o.texture)
    return out


GT_COLUMNS = ("edit_accuracy", "structure_iou", "warp_error", "outside_psnr", "injection_effect")
GT_TITLES = {
    "edit_accuracy": "Edit acc. ↑",
    "structure_iou": "Mask IoU ↑",
    "warp_error": "Warp err. (true flow) ↓",
    "outside_psnr": "PSNR outside ↑",
    "injection_effect": "|per-frame − P2V| inside",
}


def toy_ablation(
    editor: Any,
    seeds: Sequence[int],
    *,
    depth: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
    scorer: Any | None = None,
    config: Any | None = None,
    frames: int = 16,
    variants: Sequence[Variant] = VARIANTS,
    attributes: Sequence[str] = ATTRIBUTES,
    reader: Any | None = None,
    on_clip: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every variant on each attribute's edit (colour, texture) of each held-out scene in `seeds`; one
    row per (clip, edit, variant) (plus the input's), without the frames. `depth(frames)` estimates
    depth (e.g. the toy DPT, as the pipeline does); None uses the true disparity. `reader`: the texture
    reader (texture edits are scored with the paper's metrics only without it)."""
    rows: list[dict[str, Any]] = []
    n = 0
    for seed in seeds:
        clip, maps = None, None
        for attribute in attributes:
            task = edit_task(seed, frames, attribute, clip)
            if maps is None:
                clip = task.clip
                maps = list(clip.disparity) if depth is None else depth(clip.frames)
            clip_rows = edit_variants(editor, task, maps, variants, config, scorer, reader)
            if on_clip:
                on_clip(n, clip_rows)
            n += 1
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
    formats = {"warp_error": "{:.1f}", "outside_psnr": "{:.1f}", "injection_effect": "{:.1f}"}
    cols += [(k, GT_TITLES[k], formats.get(k, "{:.3f}")) for k in GT_COLUMNS if any(k in r for r in summary)]
    header = "| Variant | " + " | ".join(t for _, t, _ in cols) + " |"
    lines = [f"**{title}**", "", header, "|---|" + "---:|" * len(cols)]
    for r in summary:
        cells = [f.format(r[k]) if r.get(k) is not None else "–" for k, _, f in cols]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
