"""The toy captioner: `BlipForConditionalGeneration` (a small ViT and a small BERT-style text decoder with
cross-attention, the tiny builder's BLIP at toy widths) trained with teacher forcing to write the toy
world's captions ("a red striped ball and a yellow cube on a gray floor", objects named left to right).

Vision input: 128x128, the frames' own size, in 16x16 patches (an 8x8 grid: the cost of a 64x64 input with
8x8 patches, but the patch embedding sees the textures at full resolution). The processor written by
`save_caption` resizes every image to 128, so the project's `Captioner` feeds the model what it was trained
on. The tokenizer is the tiny builder's WordPiece vocabulary, which has every word of the grammar as a whole
token. Training images are normalised with the very image processor that is saved with the model.

Training: teacher-forced cross-entropy of the caption (the loss logged), with left-right mirroring (the
caption's objects then named in reverse order) and translations of up to 12 pixels, plus an auxiliary loss
on the vision tower's patch tokens (`PatchAttributeHead`: the colour, texture and shape each patch shows,
from the renderer's object masks; a training-only head, not part of the saved checkpoint). Without it a
from-scratch ViT trained for minutes names colours but not textures or shapes (held-out frames with every
attribute right: 29%).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toyworld.data import FrameSet
from toyworld.trainer import TrainSettings, batch_rng, component_trainer, optimise
from toyworld.world import COLOURS, SHAPES, TEXTURES

SEED = 31
SETTINGS = TrainSettings(steps=2000, batch=32)
CAPTION_SIZE = 128  # vision input resolution: the frames' own (no resize)
PATCH = 16  # 8x8 patches, as many tokens as 64x64 inputs with 8x8 patches
SHIFT = 12  # training translations: up to this many pixels each way
AUX_WEIGHT = 1.0  # weight of the patch-attribute loss (PatchAttributeHead)


def caption_processor(size: int = CAPTION_SIZE) -> Any:
    """A `BlipProcessor`: the PIL BLIP image processor at `size` and the tiny builder's BERT tokenizer."""
    from transformers import BlipProcessor

    from fixtures.tiny import bert_tokenizer, pil_image_processor

    tok = bert_tokenizer()
    image_processor = pil_image_processor("BlipImageProcessor")(size={"height": size, "width": size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tok)


def toy_blip_config(tokenizer: Any, size: int = CAPTION_SIZE) -> Any:
    """The tiny builder's BLIP config (`_build_blip`) with wider layers (vision 96, text 64), 4 vision and
    3 decoder layers, and a `size` input in 16-pixel patches."""
    from transformers import BlipConfig

    vision, text = 96, 64
    return BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text,
            "encoder_hidden_size": vision,
            "intermediate_size": 2 * text,
            "projection_dim": text,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": vision,
            "intermediate_size": 2 * vision,
            "projection_dim": text,
            "num_hidden_layers": 4,
            "num_attention_heads": 3,
            "image_size": size,
            "patch_size": PATCH,
            "initializer_range": 0.02,
        },
        projection_dim=text,
        image_text_hidden_size=text,
    )


def pixel_values(image_processor: Any, frames: np.ndarray) -> torch.Tensor:
    """uint8 frames [N,H,W,3] -> the image processor's pixel_values (float32 [N,3,s,s]).

    Frames already at the processor's size are only rescaled and normalised here (the same arithmetic the
    processor does: its resize to the same size is the identity; tests check equality), which is cheap
    enough to do per batch; other sizes go through the processor itself."""
    size = image_processor.crop_size if getattr(image_processor, "do_center_crop", False) else image_processor.size
    side = size.get("height", size.get("shortest_edge"))
    if frames.shape[1:3] != (side, side):
        return image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(image_processor.image_std, dtype=torch.float32)[:, None, None]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return (x * float(image_processor.rescale_factor) - mean) / std


def caption_tokens(tokenizer: Any, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """([DEC] words [SEP] padded, labels with -100 on padding): BLIP's decoder input, as `generate` starts it."""
    tok = tokenizer(list(captions), padding="longest", return_tensors="pt")
    ids = tok.input_ids.clone()
    ids[:, 0] = tokenizer.bos_token_id
    labels = ids.masked_fill(tok.attention_mask == 0, -100)
    return ids, labels


def mirrored_caption(text: str) -> str:
    """The caption of the left-right mirrored frame: the same words, objects in reverse order."""
    parsed = parse_caption(text)
    if parsed is None:
        raise ValueError(f"caption not in the grammar: {text!r}")
    objects, floor = parsed
    return format_caption(objects[::-1], floor)


def augment(
    frames: np.ndarray, rng: np.random.Generator, shift: int = SHIFT, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Random left-right mirroring (p = 1/2) and a random translation of up to `shift` pixels each way, the
    uncovered border filled by repeating the edge pixels (floor and backdrop; objects stay whole, their
    order unchanged). Returns (frames, ids moved the same way or None, flips: a bool per frame; a mirrored
    frame's caption is `mirrored_caption`). The translation keeps a ViT with 16-pixel patches from
    memorising patch-aligned pictures."""
    n, h, w, _ = frames.shape
    flips = rng.random(n) < 0.5
    offsets = rng.integers(-shift, shift + 1, (n, 2))
    pad = ((0, 0), (shift, shift), (shift, shift))
    padded = np.pad(frames, pad + ((0, 0),), mode="edge")
    padded_ids = np.pad(ids, pad, mode="edge") if ids is not None else None
    out = np.empty_like(frames)
    out_ids = np.empty_like(ids) if ids is not None else None
    for k in range(n):
        y, x = shift + offsets[k, 0], shift + offsets[k, 1]
        crop = padded[k, y : y + h, x : x + w]
        out[k] = crop[:, ::-1] if flips[k] else crop
        if padded_ids is not None:
            crop_ids = padded_ids[k, y : y + h, x : x + w]
            out_ids[k] = crop_ids[:, ::-1] if flips[k] else crop_ids
    return out, out_ids, flips


ATTRIBUTES = {"colour": list(COLOURS), "texture": list(TEXTURES), "shape": list(SHAPES)}


def attribute_tables(data: FrameSet) -> np.ndarray:
    """[N, 1 + objects, 3] class indices (colour, texture, shape) per frame, row 0 for floor/backdrop
    (class 0 of each) and row 1 + k for object k of `data.ids`; object classes start at 1. Objects are
    matched to the caption's by colour (a scene's objects have distinct colours)."""
    most = max(len(c) for c in data.colours)
    table = np.zeros((len(data), 1 + most, 3), np.int64)
    for f, (colours, text) in enumerate(zip(data.colours, data.captions, strict=True)):
        parsed = parse_caption(text)
        if parsed is None:
            raise ValueError(f"caption not in the grammar: {text!r}")
        named = {o[0]: o for o in parsed[0]}
        for k, colour in enumerate(colours):
            obj = named[colour]
            table[f, 1 + k] = [1 + ATTRIBUTES[a].index(v) for a, v in zip(ATTRIBUTES, obj, strict=True)]
    return table


class PatchAttributeHead(torch.nn.Module):
    """Training-only auxiliary head (not part of the saved checkpoint): from each patch token of a vision
    tower, the fractions of the patch's pixels that show each colour / texture / shape (class 0: no
    object). Dense supervision from the renderer's object masks: it teaches a from-scratch ViT to see
    the attributes in a few thousand steps, which the caption loss alone does not."""

    def __init__(self, width: int):
        super().__init__()
        self.sizes = [1 + len(v) for v in ATTRIBUTES.values()]
        self.proj = torch.nn.Linear(width, sum(self.sizes))

    def loss(self, tokens: torch.Tensor, table: np.ndarray, ids: np.ndarray, patch: int) -> torch.Tensor:
        """tokens [B, 1 + G*G, width] (class token first); table rows of the batch; ids [B, H, W]."""
        b, h, w = ids.shape
        classes = torch.from_numpy(np.take_along_axis(table, (ids.reshape(b, -1) + 1)[..., None], axis=1))
        logits = self.proj(tokens[:, 1:]).split(self.sizes, dim=-1)
        total = tokens.new_zeros(())
        for a, (size, lg) in enumerate(zip(self.sizes, logits, strict=True)):
            onehot = (
                torch.nn.functional.one_hot(classes[..., a], size)
                .float()
                .view(b, h // patch, patch, w // patch, patch, size)
            )
            target = onehot.mean((2, 4)).reshape(b, -1, size)
            total = total - (target * lg.log_softmax(-1)).sum(-1).mean()
        return total


class AttributeTraining:
    """What the toy captioner's and CLIP's trainings share: the model and a PatchAttributeHead on its
    vision tower's patch tokens (weight AUX_WEIGHT), one AdamW over both (`component_trainer`, the
    checkpoint holding the model under `key` and the head as "aux"), and batches of augmented frames
    (mirrored with their captions, `augment`) drawn with `seed`."""

    def __init__(
        self,
        name: str,
        key: str,
        model: Any,
        data: FrameSet,
        workdir: str | os.PathLike,
        settings: TrainSettings,
        seed: int,
    ) -> None:
        self.model, self.data, self.seed, self.size = model, data, seed, settings.batch
        self.head = PatchAttributeHead(model.config.vision_config.hidden_size)
        modules = {key: model, "aux": self.head}
        self.trainer, self.params = component_trainer(name, workdir, modules, settings, weight_decay=0.01)
        self.finished = self.trainer.finished()  # a finished run's weights are loaded: nothing to prepare
        self.table = None if self.finished else attribute_tables(data)

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step `i`'s (frame indices, augmented frames, their object-id maps, which were mirrored)."""
        rng = batch_rng(self.seed, i)
        idx = np.sort(rng.integers(0, len(self.data), self.size))
        return (idx, *augment(self.data.frames[idx], rng, ids=self.data.ids[idx]))

    def optimise(self, loss: torch.Tensor, patch_tokens: torch.Tensor, idx: np.ndarray, ids: np.ndarray) -> float:
        """One update on `loss` plus the attribute loss; returns `loss` alone (what loss.csv tracks)."""
        aux = self.head.loss(patch_tokens, self.table[idx], ids, self.model.config.vision_config.patch_size)
        optimise(self.trainer.opt, loss + AUX_WEIGHT * aux, self.params)
        return float(loss.detach())

    def run(self, step: Callable[[int], float]) -> Any:
        """Train with `step` (resuming from the last checkpoint); the trained model."""
        self.trainer.run(step)
        return self.trained()

    def trained(self) -> Any:
        return self.model.eval().requires_grad_(False)


def train_caption(data: FrameSet, workdir: str | os.PathLike, settings: TrainSettings = SETTINGS) -> Any:
    """Train a toy BLIP on `data` under `<workdir>/caption/` (resumable); returns it in eval mode."""
    from transformers import BlipForConditionalGeneration

    proc = caption_processor()
    torch.manual_seed(SEED)
    model = BlipForConditionalGeneration(toy_blip_config(proc.tokenizer))
    run = AttributeTraining("caption", "blip", model, data, workdir, settings, SEED)
    if run.finished:
        return run.trained()
    # Token ids of each caption and of its mirror image's caption (the same words, so the same length).
    ids, labels = caption_tokens(proc.tokenizer, data.captions)
    ids_m, labels_m = caption_tokens(proc.tokenizer, [mirrored_caption(c) for c in data.captions])

    def step(i: int) -> float:
        idx, frames, masks, flips = run.batch(i)
        flip = torch.from_numpy(flips)[:, None]
        tok = torch.where(flip, ids_m[idx], ids[idx])
        lab = torch.where(flip, labels_m[idx], labels[idx])
        mask = lab != -100
        width = int(mask.sum(1).max())
        # BlipForConditionalGeneration.forward, spelled out to reach the patch tokens for the auxiliary loss
        image = model.vision_model(pixel_values=pixel_values(proc.image_processor, frames)).last_hidden_state
        out = model.text_decoder(
            input_ids=tok[:, :width],
            attention_mask=mask[:, :width].long(),
            encoder_hidden_states=image,
            labels=lab[:, :width],
            reduction="mean",
        )
        return run.optimise(out.loss, image, idx, masks)

    return run.run(step)


_OBJECT = re.compile(r"^a (\w+)(?: (striped|dotted|checkered))? (\w+)$")


def parse_caption(text: str) -> tuple[list[tuple[str, str, str]], str] | None:
    """'a red striped ball and a yellow cube on a gray floor' -> ([('red','striped','ball'),
    ('yellow','plain','cube')], 'gray'); None when the text is not in the grammar."""
    text = " ".join(text.split())
    if " on a " not in text or not text.endswith(" floor"):
        return None
    things, floor = text.rsplit(" on a ", 1)
    objects = []
    for part in things.split(" and "):
        m = _OBJECT.match(part)
        if m is None:
            return None
        objects.append((m.group(1), m.group(2) or "plain", m.group(3)))
    return objects, floor.removesuffix(" floor")


def format_caption(objects: Sequence[tuple[str, str, str]], floor: str) -> str:
    """The inverse of `parse_caption` (the grammar of toyworld.world.caption)."""
    words = [
        " ".join(w for w in (colour, "" if texture == "plain" else texture, shape) if w)
        for colour, texture, shape in objects
    ]
    return " and ".join(f"a {w}" for w in words) + f" on a {floor} floor"


def caption_scores(predicted: Sequence[str], truth: Sequence[str]) -> dict[str, float]:
    """Attribute accuracy of predicted captions against the true ones.

    A frame is right ("all_attributes") when its caption parses and names the same number of objects, in the
    same left-to-right order, each with the right colour, texture word (none = plain) and shape, and the
    right floor colour. Per-attribute figures count each object slot (by position) separately; an object
    missing from, or extra in, the prediction counts as wrong on all three attributes.
    """
    frames_right = exact = parsed = 0
    slots = {"colour": 0, "texture": 0, "shape": 0}
    n_objects = floors = 0
    for p, t in zip(predicted, truth, strict=True):
        tp, tt = parse_caption(p), parse_caption(t)
        if tt is None:
            raise ValueError(f"true caption not in the grammar: {t!r}")
        exact += " ".join(p.split()) == " ".join(t.split())
        n_objects += max(len(tt[0]), len(tp[0]) if tp else 0)
        if tp is None:
            continue
        parsed += 1
        floors += tp[1] == tt[1]
        for a, b in zip(tp[0], tt[0], strict=False):
            for k, name in enumerate(slots):
                slots[name] += a[k] == b[k]
        frames_right += tp == tt
    n = max(1, len(truth))
    return {
        "all_attributes": frames_right / n,
        "exact_caption": exact / n,
        "parsed": parsed / n,
        "floor": floors / n,
        **{name: v / max(1, n_objects) for name, v in slots.items()},
        "frames": len(truth),
    }


def evaluate_caption(
    model: Any, heldout: FrameSet, *, folder: str | os.PathLike | None = None, batch_size: int = 32
) -> dict[str, Any]:
    """Held-out figures (see `caption_scores`) of greedy captions written by the project's `Captioner`.

    `folder` given: the captioner is loaded from it with `Captioner.from_model` (what the CLI does) and
    `model` is not used; otherwise `model` (a trained BLIP or a `Captioner`) is wrapped with
    `caption_processor()`. A few (prediction, truth) examples come back under "examples"."""
    from pipeline.models.caption import Captioner

    if folder is not None:
        cap = Captioner.from_model(str(folder), device="cpu")
    elif isinstance(model, Captioner):
        cap = model
    else:
        proc = caption_processor(int(model.config.vision_config.image_size))
        cap = Captioner(model, proc.image_processor, proc.tokenizer, device=torch.device("cpu"), dtype=torch.float32)
    predicted = cap(heldout.frames, batch_size=batch_size)
    scores: dict[str, Any] = caption_scores(predicted, heldout.captions)
    wrong = [(p, t) for p, t in zip(predicted, heldout.captions, strict=True) if parse_caption(p) != parse_caption(t)]
    scores["examples"] = [list(x) for x in list(zip(predicted, heldout.captions, strict=True))[:3]]
    scores["wrong_examples"] = [list(x) for x in wrong[:5]]
    return scores


def save_caption(model: Any, processor: Any, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write a BLIP captioning folder in Salesforce/blip-image-captioning-large's file set
    (`fixtures.published.write_blip_folder`; preprocessor at the model's input size) that
    `Captioner.from_model(folder)` loads. `processor`: `caption_processor()` (its tokenizer is written);
    `folder` must not exist or be empty."""
    from fixtures.published import write_blip_folder

    return write_blip_folder(folder, model=model, tokenizer=processor.tokenizer, dtype=dtype)
