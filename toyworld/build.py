"""`train_toy(output)`: render the toy world and train every toy model, resumably, then write them.

    output/
      data/                 rendered frame sets (.npz)
      vae/ vae-decoder/ unet/ texture/ depth/ caption/ clip/   checkpoints, loss.csv, loss.png per part
      model/                the result: the published stable-diffusion-2-depth layout (+ blip/, clip/, texture/)
      figures.json          the component figures on held-out scenes (BENCHMARKS.md)

Every part resumes from its last checkpoint, so a stopped run goes on where it was; a finished part is
loaded, not retrained. Parts may run in separate processes at once (`parts=`): the UNet needs only the
VAE's first phase, so `unet` in one process and `vae-decoder,texture,depth,caption,clip` in another
use two cores; a last call with every part done writes the folder. The committed toy models
(`--model toy`) are `model/` of such a run, written in float16.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toyworld import PARTS

log = logging.getLogger(__name__)

SAMPLES = 48  # held-out scenes for the text-to-image figure
MONITOR_SCENES = 16  # held-out scenes sampled at each UNet checkpoint (unet/monitor.csv)
MONITOR_EVERY = 1000  # UNet steps between two monitor samples


class _Figures:
    """figures.json, read and written whole at each update (two processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def update(self, **values: Any) -> None:
        from pipeline.io.atomic import atomic_path

        current = json.loads(self.path.read_text()) if self.path.exists() else {}
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(current.get(k), dict):
                current[k] = {**current[k], **v}
            else:
                current[k] = v
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(current, indent=2))


def train_toy(
    output: str | os.PathLike,
    *,
    parts: Sequence[str] | None = None,
    scale: float = 1.0,
    clips: int | None = None,
    heldout: int | None = None,
) -> Path | None:
    """Train the toy models under `output`; returns the written model folder, or None when `parts`
    left some part untrained. `scale` multiplies every part's step count; `clips`/`heldout`: scenes
    rendered (tests use a tiny fraction)."""
    from toyworld.data import heldout_set, training_set

    todo = list(PARTS if parts is None else parts)
    unknown = [p for p in todo if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    figures = _Figures(out / "figures.json")

    def steps(n: int) -> int:
        return max(2, int(n * scale))

    data = training_set(out, clips) if clips else training_set(out)
    held = heldout_set(out, heldout) if heldout else heldout_set(out)
    models: dict[str, Any] = {}
    from toyworld.tokens import write_toy_tokenizer
    from toyworld.train_vae import DECODER_STEPS, STEPS, encode, finetune_decoder, psnr, train_vae

    def vae() -> Any:
        if "vae" not in models:
            if "vae" not in todo and not _done(out, "vae"):
                raise RuntimeError(f"the VAE of {out} is not trained yet: run the 'vae' part first")
            models["vae"] = train_vae(data, out, steps=steps(STEPS))
        return models["vae"]

    tokenizer = write_toy_tokenizer(out / "tokenizer")
    for part in PARTS:
        if part not in todo or part == "vae":
            continue
        t = time.time()
        if part == "unet":
            from toyworld.train_unet import STEPS as UNET_STEPS
            from toyworld.train_unet import train_unet

            latents_path = out / "unet" / "latents.pt"
            if latents_path.exists():
                latents = torch.load(latents_path)
            else:
                latents = encode(vae(), data.frames)
                latents_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(latents, latents_path)
            monitor = _Monitor(out, vae, tokenizer, held_seeds(MONITOR_SCENES))
            models["unet"], models["text_encoder"] = train_unet(
                data, latents, tokenizer, out, steps=steps(UNET_STEPS), on_checkpoint=monitor
            )
        elif part == "vae-decoder":
            models["vae"] = finetune_decoder(vae(), data, out, steps=steps(DECODER_STEPS))
            figures.update(vae_psnr_db=round(psnr(models["vae"], held.frames), 2))
        else:
            from toyworld import texture, train_caption, train_clip, train_depth

            module = {"texture": texture, "depth": train_depth, "caption": train_caption, "clip": train_clip}[part]
            train, settings = getattr(module, f"train_{part}"), module.SETTINGS
            trained = train(data, out, replace(settings, steps=steps(settings.steps)))
            figures.update(**{part: getattr(module, f"evaluate_{part}")(trained, held)})
            models[part] = trained
        figures.update(seconds={part: round(time.time() - t, 1)})
    if "vae" in todo:
        vae()
    if not all(_done(out, p) for p in PARTS):
        log.info("parts still to train: %s", ", ".join(p for p in PARTS if not _done(out, p)))
        return None
    return write_result(out, data, held, tokenizer, scale)


def _done(out: Path, part: str) -> bool:
    return (out / part / "done").exists()


def held_seeds(n: int) -> range:
    from toyworld.data import HELDOUT_SEED

    return range(HELDOUT_SEED, HELDOUT_SEED + n)


class _Monitor:
    """At each UNet checkpoint (every MONITOR_EVERY steps): text-to-image on a few held-out scenes with
    the EMA weights (20 DDIM steps, guidance 7.5), appended to unet/monitor.csv, so a long run shows
    when it is good enough."""

    def __init__(self, out: Path, vae: Any, tokenizer: Any, seeds: range) -> None:
        self.out, self.vae, self.tokenizer, self.seeds = out, vae, tokenizer, seeds

    def __call__(self, step: int, modules: dict[str, torch.nn.Module]) -> None:
        if step % MONITOR_EVERY:
            return
        from toyworld.benchmark import read_objects
        from toyworld.world import random_scene, render

        t = time.time()
        reader = _reader(self.out)
        hits = {"colour": [], "texture": []}
        for seed in self.seeds:
            clip = render(random_scene(seed, frames=1))
            frame = sample(modules["ema_unet"], modules["ema_text_encoder"], self.tokenizer, self.vae(),
                           clip.disparity[0], clip.captions[0], seed)
            for k, v in read_objects(frame, clip, reader).items():
                hits[k] += v
        row = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
        path = self.out / "unet" / "monitor.csv"
        new = not path.exists()
        with open(path, "a") as f:
            if new:
                f.write("step,colour_accuracy,texture_accuracy,seconds\n")
            f.write(f"{step},{row['colour']:.3f},{row['texture']:.3f},{time.time() - t:.0f}\n")
        log.info("unet step %d: %s", step, row)


@torch.no_grad()
def sample(unet: Any, text: Any, tokenizer: Any, vae: Any, disparity: np.ndarray, prompt: str, seed: int,
           steps: int = 20, guidance: float = 7.5) -> np.ndarray:
    """Text-to-image from seeded noise with the true depth: a plain DDIM loop (the method's constants,
    no injection), for watching training without the editor."""
    from toyworld.train_unet import alphas_cumprod, depth_maps

    ab = alphas_cumprod()
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    size = disparity.shape[0] // f
    depth = depth_maps(disparity[None], size)
    ids = tokenizer([prompt, ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    emb = text(ids)[0]
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((1, 4, size, size), generator=g)
    delta = 1000 // steps
    for k in range(steps):
        t = (steps - 1 - k) * delta
        eps_c, eps_u = unet(torch.cat([z, depth], 1).repeat(2, 1, 1, 1), torch.tensor([t, t]), emb).sample.chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        a, b = ab[t], ab[max(t - delta, 0)]
        x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
        z = b.sqrt() * x0 + (1 - b).sqrt() * eps
    x = vae.decode(z / 0.18215).sample.clamp(-1, 1)
    return ((x[0] + 1) / 2 * 255).floor().byte().permute(1, 2, 0).numpy()


def _reader(out: Path) -> Any:
    from toyworld.texture import load_reader

    return load_reader(out / "texture") if _done(out, "texture") else None


def write_result(out: Path, data: Any, held: Any, tokenizer: Any, scale: float = 1.0) -> Path:
    """Every part trained: load each, write model/ (float16, published layouts) and the figures measured
    through the written files and the project's own loaders."""
    from pipeline.method.editor import Pix2Video
    from pipeline.models.loading import load_diffusion_models
    from toyworld import texture, train_caption, train_clip, train_depth
    from toyworld.benchmark import sample_accuracy
    from toyworld.train_unet import train_unet
    from toyworld.train_vae import finetune_decoder, train_vae

    vae = finetune_decoder(train_vae(data, out), data, out)
    unet, text = train_unet(data, None, tokenizer, out)  # trained: loaded, no latents needed
    models = {
        "vae": vae,
        "unet": unet,
        "text_encoder": text,
        "tokenizer": tokenizer,
        "depth": train_depth.train_depth(data, out),
        "caption": train_caption.train_caption(data, out),
        "clip": train_clip.train_clip(data, out),
        "texture": texture.train_texture(data, out),
    }
    folder = write_toy_folder(out / "model", models)
    t = time.time()
    editor = Pix2Video(load_diffusion_models(str(folder), device="cpu"))
    n = max(2, int(SAMPLES * min(scale, 1.0)))
    reader = texture.load_reader(folder / "texture")
    figures = _Figures(out / "figures.json")
    figures.update(text_to_image=sample_accuracy(editor, held_seeds(n), steps=max(2, int(50 * scale)), reader=reader))
    figures.update(seconds={"text_to_image": round(time.time() - t, 1)})
    return folder


def write_toy_folder(folder: str | os.PathLike, models: dict[str, Any], dtype: torch.dtype = torch.float16) -> Path:
    """The trained modules in the published layouts, weights in `dtype` (float16: half the bytes, and
    the figures in BENCHMARKS.md are measured on the float16 files), atomically, replacing an older
    folder: stable-diffusion-2-depth at the top (working size 128), `blip/` (captioner), `clip/`
    (metrics) and `texture/` (the texture reader of the measures) inside."""
    from fixtures.published import write_blip_folder, write_clip_folder, write_sd2_depth_folder
    from pipeline.io.atomic import atomic_path
    from toyworld.texture import save_reader
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
            working_size=SIZE,
        )
        write_blip_folder(tmp / "blip", model=models["caption"], tokenizer=caption_processor().tokenizer, dtype=dtype)
        write_clip_folder(tmp / "clip", model=models["clip"], tokenizer=clip_processor().tokenizer, dtype=dtype)
        save_reader(models["texture"], tmp / "texture", dtype=dtype)
    return folder
