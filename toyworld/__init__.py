"""The toy world: a synthetic video domain with ground truth (`world`), and the training of small
models in the published stable-diffusion-2-depth layout on it (`build.train_toy`).

The committed result lives in `toyworld/model/` and is what `--model toy`, `--caption-model toy`
and `--clip-model toy` load, through the same loaders as the real checkpoints. It is not SD2: it is a
world made to show and measure the method offline, on a CPU.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError

# What `train-toy --parts` trains (toyworld/build.py), here so the command line reads it without torch.
PARTS = ("vae", "unet", "vae-decoder", "texture", "depth", "caption", "clip")

TOY_MODEL_DIR = Path(__file__).parent / "model"


def toy_model_dir() -> Path:
    """The committed toy models' folder (SD2-depth layout, plus blip/ and clip/)."""
    if not (TOY_MODEL_DIR / "model_index.json").is_file():
        raise InputError(
            f"the toy models are missing from {TOY_MODEL_DIR}: train them with "
            "`pix2video train-toy --output DIR` and pass --model DIR/model"
        )
    return TOY_MODEL_DIR
