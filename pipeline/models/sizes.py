"""The sizes a diffusion model works at, read from its configs without loading any weights.

- The VAE's scale factor (pixels per latent cell) is `2 ** (len(vae.config.block_out_channels) - 1)`,
  as diffusers' pipelines compute it: 8 for SD2 (512² frames, 64² latents), 4 for a VAE with three
  blocks.
- Frame sides must be multiples of that factor times 2 ** (the UNet's downsamplings,
  `len(unet.config.block_out_channels) - 1`), so that every level of the UNet has a whole grid: 64 for
  SD2 (8 · 2³).
- The default working size (the short side of the frames when the user gives no size) is the folder's
  `model_index.json` key `"_working_size"` when present, else SD2's 512. diffusers drops keys that
  start with "_" when it loads a pipeline (`ConfigMixin.extract_init_dict`), so a folder with the key
  still loads as a `StableDiffusionDepth2ImgPipeline`. The UNet's `sample_size` is not this: the
  published SD2-depth says 32 there (latent cells, of a 256² image) although it was trained at 512².

For a local folder the three JSON files are read directly. The published SD2-depth's hub id gets its
known values without asking the hub (they are pinned in `fixtures.published`: 8x VAE, three UNet
downsamplings, no working-size key). Any other hub id is asked through diffusers' `load_config` (the
small config files only, cached as the weights are); when the hub cannot be reached the SD2 values are
assumed, and the loader reports the unreachable model when it comes to the weights.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputError
from pipeline.io.frames import DEFAULT_SHORT_SIDE, default_size, parse_size
from pipeline.models.names import DEFAULT_MODEL

log = logging.getLogger(__name__)

WORKING_SIZE_KEY = "_working_size"  # in model_index.json: the short side, in pixels, the model works at


def vae_scale_factor(vae_config: Any) -> int:
    """Pixels per latent cell: 2 ** (VAE blocks - 1), as diffusers' pipelines compute it."""
    return 2 ** (len(_get(vae_config, "block_out_channels")) - 1)


def unet_downsamplings(unet_config: Any) -> int:
    """How often the UNet halves its grid: every down block but the last downsamples."""
    return len(_get(unet_config, "block_out_channels")) - 1


def _get(config: Any, key: str) -> Any:
    # A diffusers FrozenDict (module.config) or a plain dict read from config.json.
    return config[key] if isinstance(config, dict) else getattr(config, key)


@dataclass(frozen=True)
class ModelSizes:
    """What sizes a model takes: SD2-depth's by default (8x VAE, three UNet downsamplings, 512 px)."""

    vae_factor: int = 8  # pixels per latent cell
    unet_downsamplings: int = 3
    working_size: int = DEFAULT_SHORT_SIDE  # default short side of the frames, pixels

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of this (64 for SD2)."""
        return self.vae_factor * 2**self.unet_downsamplings

    @classmethod
    def from_configs(cls, vae_config: Any, unet_config: Any, model_index: dict[str, Any] | None = None) -> ModelSizes:
        working = (model_index or {}).get(WORKING_SIZE_KEY, DEFAULT_SHORT_SIDE)
        if isinstance(working, bool) or not isinstance(working, int) or working <= 0:
            raise InputError(f"model_index.json: {WORKING_SIZE_KEY} must be a positive pixel count, got {working!r}")
        return cls(vae_scale_factor(vae_config), unet_downsamplings(unet_config), working)

    def parse_size(self, text: str) -> tuple[int, int]:
        """``"WxH"`` -> (width, height), both positive multiples of `multiple`."""
        return parse_size(text, self.multiple)

    def default_size(self, width: int, height: int) -> tuple[int, int]:
        """The working size for a ``width`` x ``height`` video: `working_size` on the short side."""
        return default_size(width, height, short_side=self.working_size, multiple=self.multiple)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent of a ``height`` x ``width`` frame."""
        return height // self.vae_factor, width // self.vae_factor


def read_model_sizes(model: str) -> ModelSizes:
    """`ModelSizes` of a model folder (its vae/config.json, unet/config.json and model_index.json) or a
    hub id, without loading weights. `model` as `resolve_model` returns it (a folder or a hub id)."""
    folder = os.path.expanduser(model)
    if model == DEFAULT_MODEL and not os.path.isdir(folder):
        return ModelSizes()
    if os.path.isdir(folder):
        return ModelSizes.from_configs(
            _read_json(folder, "vae/config.json"),
            _read_json(folder, "unet/config.json"),
            _read_json(folder, "model_index.json", required=False),
        )
    try:
        from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel

        vae = AutoencoderKL.load_config(model, subfolder="vae")
        unet = UNet2DConditionModel.load_config(model, subfolder="unet")
        index = DiffusionPipeline.load_config(model)
    except Exception as e:  # offline, unknown id, no such file: the weights' loader will say which
        log.debug("sizes of %s: SD2's assumed (%s: %s)", model, type(e).__name__, e)
        return ModelSizes()
    return ModelSizes.from_configs(vae, unet, index)


def _read_json(folder: str, name: str, *, required: bool = True) -> dict[str, Any] | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if not required:
            return None
        layout = "the stable-diffusion-2-depth layout"
        raise InputError(f"model folder {folder!r} has no {name}: it must be in {layout}, or use --model tiny")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"model folder {folder!r}: {name} is not readable JSON ({e})") from e
