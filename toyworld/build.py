"""`train_toy(output)`: render the toy world and train every toy model, resumably, then write them.

    output/
      data/                 rendered frame sets (.npz)
      vae/ vae-decoder/ unet/ depth/ caption/ clip/   checkpoints, loss.csv, loss.png per component
      model/                the result: the published stable-diffusion-2-depth layout (+ blip/, clip/)
      figures.json          the component figures on held-out scenes (BENCHMARKS.md)

Every component resumes from its last checkpoint, so a stopped run goes on where it was; a finished
component is loaded, not retrained. The committed toy models (`--model toy`) are `model/` of such a run,
written in float16.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SAMPLES = 40  # held-out scenes for the text-to-image figure

def _timed(figures: dict[str, Any], name: str, started: float) -> None:
    figures.setdefault("seconds", {})[name] = round(time.time() - started, 1)


def train_toy(
    output: str | os.PathLike, *, scale: float = 1.0, clips: int | None = None, heldout: int | None = None
) -> Path:
    """Train every component under `output`; returns the written model folder. `scale` multiplies
    every component's step count; `clips`/`heldout`: scenes rendered (tests use a tiny fraction)."""
    from fixtures.tiny import write_clip_tokenizer
    from toyworld.data import heldout_set, training_set
    from toyworld.train_unet import train_unet
    from toyworld.train_vae import encode, finetune_decoder, psnr, train_vae

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    fig_path = out / "figures.json"
    figures: dict[str, Any] = json.loads(fig_path.read_text()) if fig_path.exists() else {}

    def steps(n: int) -> int:
        return max(2, int(n * scale))

    t = time.time()
    data = training_set(out, clips) if clips else training_set(out)
    held = heldout_set(out, heldout) if heldout else heldout_set(out)
    _timed(figures, "render", t)

    t = time.time()
    vae = train_vae(data, out, steps=steps(1200))
    vae = finetune_decoder(vae, data, out, steps=steps(1500))
    figures["vae_psnr_db"] = round(psnr(vae, held.frames), 2)
    _timed(figures, "vae", t)

    tokenizer = write_clip_tokenizer(out / "tokenizer", pad_token="!")
    t = time.time()
    latents_path = out / "unet" / "latents.pt"
    if latents_path.exists():
        latents = torch.load(latents_path)
    else:
        latents = encode(vae, data.frames)
        latents_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(latents, latents_path)
    unet, text = train_unet(data, latents, tokenizer, out, steps=steps(2500))
    _timed(figures, "unet", t)

    models: dict[str, Any] = {"vae": vae, "unet": unet, "text_encoder": text, "tokenizer": tokenizer}
    # The image models the editor does not need: depth (DPT), captioner (BLIP), metric CLIP.
    from toyworld import train_caption, train_clip, train_depth

    for name, module in (("depth", train_depth), ("caption", train_caption), ("clip", train_clip)):
        t = time.time()
        train = getattr(module, f"train_{name}")
        trained = train(data, out, steps=steps(inspect.signature(train).parameters["steps"].default))
        figures[name] = getattr(module, f"evaluate_{name}")(trained, held)
        models[name] = trained
        _timed(figures, name, t)

    folder = write_toy_folder(out / "model", models)
    # Text-to-image through the written float16 files and the real loader: from noise, true depth.
    from pipeline.method.editor import Pix2Video
    from pipeline.models.loading import load_diffusion_models
    from toyworld.benchmark import sample_accuracy
    from toyworld.data import HELDOUT_SEED

    t = time.time()
    editor = Pix2Video(load_diffusion_models(str(folder), device="cpu"))
    n = max(2, int(SAMPLES * min(scale, 1.0)))
    figures["text_to_image"] = sample_accuracy(editor, range(HELDOUT_SEED, HELDOUT_SEED + n), steps=steps(50))
    _timed(figures, "text_to_image", t)
    fig_path.write_text(json.dumps(figures, indent=2))
    return folder


def write_toy_folder(folder: str | os.PathLike, models: dict[str, Any], dtype: torch.dtype = torch.float16) -> Path:
    """The trained modules in the published layouts, weights in `dtype` (float16: half the bytes, and
    the figures in BENCHMARKS.md are measured on the float16 files), atomically, replacing an older
    folder: stable-diffusion-2-depth at the top, `blip/` (captioner) and `clip/` (metrics) inside.
    `models`: vae, unet, text_encoder, tokenizer, depth, caption, clip (the last three as
    `train_depth`, `train_caption`, `train_clip` return them)."""
    from fixtures.published import write_blip_folder, write_clip_folder, write_sd2_depth_folder
    from pipeline.io.atomic import atomic_path
    from toyworld.train_caption import caption_processor
    from toyworld.train_clip import clip_processor
    from toyworld.world import SIZE

    folder = Path(folder)
    with atomic_path(folder, folder=True, replace=True) as tmp:
        write_sd2_depth_folder(
            tmp,
            unet=models["unet"],
            vae=models["vae"],
            text_encoder=models["text_encoder"],
            tokenizer=models["tokenizer"],
            depth_estimator=models["depth"],
            dtype=dtype,
            working_size=SIZE,  # `--model toy` edits at the world's frame size by default, not SD2's 512
        )
        write_blip_folder(tmp / "blip", model=models["caption"], tokenizer=caption_processor().tokenizer, dtype=dtype)
        write_clip_folder(tmp / "clip", model=models["clip"], tokenizer=clip_processor().tokenizer, dtype=dtype)
    return folder
