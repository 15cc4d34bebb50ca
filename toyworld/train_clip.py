"""The toy metric CLIP: `CLIPModel` (the tiny builder's `_build_clip` at toy widths, quick_gelu in both towers
as in OpenAI's CLIP) trained contrastively on toy frames and their captions.

Vision input: 128x128, the frames' own size, in 16x16 patches (an 8x8 grid). The processor written by
`save_clip` resizes the shortest edge to 128 and centre-crops 128x128, so `ClipScorer.from_model` feeds the
model what it was trained on. The tokenizer is the tiny builder's CLIP BPE vocabulary (every word of the
grammar is one token).

Loss: CLIP's symmetric cross-entropy over the batch's image-text similarities, with one change: frames of
the same scene often share a caption, so each image's (and each caption's) target is spread uniformly over
every batch item with the same caption instead of being only its own pair (no false negatives).
Augmentation as the captioner's (`toyworld.train_caption.augment`): left-right mirroring with the
mirrored caption (objects named in reverse order) and translations of up to 12 pixels. And as the
captioner, an auxiliary loss on the vision tower's patch tokens (`PatchAttributeHead`: which colour,
texture and shape each patch shows, from the renderer's object masks; training only, not saved). The loss
logged is the contrastive one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toyworld.data import FrameSet
from toyworld.train_caption import AttributeTraining, mirrored_caption, pixel_values
from toyworld.trainer import TrainSettings

SEED = 41
SETTINGS = TrainSettings(steps=1200, batch=32)
CLIP_SIZE = 128
PATCH = 16
GALLERY = 32  # images per retrieval gallery (distinct captions)
GALLERIES = 50


def clip_processor(size: int = CLIP_SIZE) -> Any:
    """A `CLIPProcessor`: the PIL CLIP image processor at `size` and the tiny builder's CLIP tokenizer."""
    from transformers import CLIPProcessor

    from fixtures.tiny import clip_tokenizer, pil_image_processor

    tok = clip_tokenizer(pad_token="<|endoftext|>")
    image_processor = pil_image_processor("CLIPImageProcessor")(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tok)


def toy_clip_config(tokenizer: Any, size: int = CLIP_SIZE) -> Any:
    """`_build_clip`'s config with wider layers (vision 96, text 64; projection 64), 4 vision and 3 text
    layers, quick_gelu in both towers, and a `size` input in 16-pixel patches."""
    from transformers import CLIPConfig, CLIPVisionConfig

    from toyworld.tokens import text_tower_config

    width, vision_width = 64, 96
    text = text_tower_config(tokenizer, width=width, intermediate=2 * width, hidden_act="quick_gelu")
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=2 * vision_width,
        num_hidden_layers=4,
        num_attention_heads=3,
        image_size=size,
        patch_size=PATCH,
        projection_dim=width,
        hidden_act="quick_gelu",
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=width)


def _unit(x: Any) -> torch.Tensor:
    x = x if isinstance(x, torch.Tensor) else x.pooler_output
    return torch.nn.functional.normalize(x, dim=-1)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of `scale * image @ text.T` against targets uniform over equal captions."""
    logits = scale * image @ text.T
    target = same.float() / same.float().sum(1, keepdim=True)
    li = -(target * logits.log_softmax(1)).sum(1).mean()
    lt = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return (li + lt) / 2


def train_clip(data: FrameSet, workdir: str | os.PathLike, settings: TrainSettings = SETTINGS) -> Any:
    """Train a toy CLIP on `data` under `<workdir>/clip/` (resumable); returns it in eval mode."""
    from transformers import CLIPModel

    proc = clip_processor()
    torch.manual_seed(SEED)
    model = CLIPModel(toy_clip_config(proc.tokenizer))
    run = AttributeTraining("clip", "clip", model, data, workdir, settings, SEED)
    if run.finished:
        return run.trained()
    # Every caption and its mirror image's (see train_caption.augment), tokenized once.
    mirrored = [mirrored_caption(c) for c in data.captions]
    names = sorted(set(data.captions) | set(mirrored))
    where = {c: k for k, c in enumerate(names)}
    caption_index = np.array([where[c] for c in data.captions])
    mirrored_index = np.array([where[c] for c in mirrored])
    tok = proc.tokenizer(names, padding="longest", return_tensors="pt")

    def step(i: int) -> float:
        idx, frames, masks, flips = run.batch(i)
        cap = np.where(flips, mirrored_index[idx], caption_index[idx])
        # get_image_features, spelled out to reach the patch tokens for the auxiliary loss
        vision = model.vision_model(pixel_values=pixel_values(proc.image_processor, frames))
        image = _unit(model.visual_projection(vision.pooler_output))
        uniq, inverse = np.unique(cap, return_inverse=True)  # each distinct caption through the text tower once
        ids, mask = tok.input_ids[uniq], tok.attention_mask[uniq]
        text = _unit(model.get_text_features(input_ids=ids, attention_mask=mask))[torch.from_numpy(inverse)]
        same = torch.from_numpy(cap[:, None] == cap[None, :])
        loss = contrastive_loss(image, text, model.logit_scale.exp().clamp(max=100), same)
        return run.optimise(loss, vision.last_hidden_state, idx, masks)

    return run.run(step)


def retrieval_galleries(
    captions: list[str], size: int = GALLERY, count: int = GALLERIES, seed: int = 0
) -> list[list[int]]:
    """`count` galleries of `size` frame indices with pairwise distinct captions.

    Each gallery: `size` distinct captions drawn at random (without replacement) from the held-out set's
    distinct captions, and for each caption one frame drawn at random among the frames with that caption.
    Seeded, so every model is measured on the same galleries."""
    rng = np.random.default_rng(seed)
    by_caption: dict[str, list[int]] = {}
    for i, c in enumerate(captions):
        by_caption.setdefault(c, []).append(i)
    names = sorted(by_caption)
    if len(names) < size:
        raise ValueError(f"only {len(names)} distinct captions, fewer than a gallery of {size}")
    galleries = []
    for _ in range(count):
        chosen = rng.choice(len(names), size, replace=False)
        galleries.append([int(rng.choice(by_caption[names[k]])) for k in chosen])
    return galleries


def evaluate_clip(
    model: Any,
    heldout: FrameSet,
    *,
    folder: str | os.PathLike | None = None,
    galleries: int = GALLERIES,
    gallery_size: int = GALLERY,
) -> dict[str, Any]:
    """Text-to-image top-1 retrieval on held-out frames, through the project's `ClipScorer`.

    Galleries: see `retrieval_galleries` (default 50 galleries of 32 frames with distinct captions). In each,
    every caption is a query; it is right when, of the gallery's 32 frames, its own frame has the highest
    cosine similarity to it. Also image-to-text top-1 over the same galleries, and the mean cosine of true
    pairs minus that of the other pairs. `folder` given: the scorer is loaded from it with
    `ClipScorer.from_model` (`model` unused); otherwise `model` is wrapped with `clip_processor()`."""
    from pipeline.quality.clip import ClipScorer

    if folder is not None:
        scorer = ClipScorer.from_model(str(folder), device="cpu")
    elif isinstance(model, ClipScorer):
        scorer = model
    else:
        proc = clip_processor(int(model.config.vision_config.image_size))
        scorer = ClipScorer(
            model, proc.image_processor, proc.tokenizer, device=torch.device("cpu"), dtype=torch.float32
        )
    images = scorer.image_embeddings(heldout.frames, batch_size=64)
    texts = {c: scorer.text_embedding(c) for c in sorted(set(heldout.captions))}
    t2i = i2t = 0
    margins = []
    # A held-out set with fewer distinct captions than `gallery_size` (a smoke run) gets smaller galleries.
    gallery_size = max(1, min(gallery_size, len(texts)))
    groups = retrieval_galleries(heldout.captions, size=gallery_size, count=galleries)
    for g in groups:
        im = images[g]
        tx = torch.stack([texts[heldout.captions[i]] for i in g])
        sim = tx @ im.T  # [query caption, gallery image]
        eye = torch.eye(len(g), dtype=torch.bool)
        t2i += int((sim.argmax(1) == torch.arange(len(g))).sum())
        i2t += int((sim.argmax(0) == torch.arange(len(g))).sum())
        margins.append(float(sim[eye].mean() - sim[~eye].mean()))
    n = len(groups) * gallery_size
    return {
        "t2i_top1": t2i / n,
        "i2t_top1": i2t / n,
        "cosine_margin": float(np.mean(margins)),
        "galleries": len(groups),
        "gallery_size": gallery_size,
        "distinct_captions": len(texts),
    }


def save_clip(model: Any, processor: Any, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write a CLIPModel folder in openai/clip-vit-large-patch14's file set
    (`fixtures.published.write_clip_folder`; preprocessor at the model's input size) that
    `ClipScorer.from_model(folder)` loads. `processor`: `clip_processor()` (its tokenizer is written);
    `folder` must not exist or be empty."""
    from fixtures.published import write_clip_folder

    return write_clip_folder(folder, model=model, tokenizer=processor.tokenizer, dtype=dtype)
