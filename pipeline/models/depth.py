"""Monocular depth for the depth-conditioned UNet: DPT (MiDaS), as bundled with SD2-depth.

`DepthEstimator.from_model(m)` accepts
- an SD2-depth checkpoint (hub id or folder) — its `depth_estimator/` (DPTForDepthEstimation, the
  DPT-hybrid MiDaS model) and `feature_extractor/` (the preprocessing) are used, exactly what
  diffusers' depth2img pipeline runs;
- a standalone DPT checkpoint (hub id or folder with config.json), e.g. `Intel/dpt-hybrid-midas`;
- 'tiny' — the tiny random DPT of `fixtures.tiny` (noise-like depth; for tests, demos, benchmarks).

The output is the raw `predicted_depth` (relative inverse depth: larger = nearer) at the
preprocessor's resolution (384x384 for SD2-depth). Resizing to the latent grid and min-max
normalisation belong to the editor (docs/METHOD.md, step 2).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.models.loading import (
    DEFAULT_MODEL,
    LoadedModel,
    LoadTarget,
    hub_error,
    is_local,
    load_pretrained,
    pil_image_processor,
)


def load_dpt_image_processor(model: str, subfolder: str | None = None) -> Any:
    """Load a DPT preprocessor config: the published SD2-depth one (DPTImageProcessor, size
    {"height": 384, "width": 384}, bilinear, rescale by 1/255, mean = std = 0.5; see
    `fixtures.published.dpt_preprocessor_config`), and older snapshots that name
    `DPTFeatureExtractor` (gone in transformers 5) with an integer size: loading through the
    image-processor class directly (not AutoImageProcessor) ignores the class name, and an integer
    size is read as height = width = size."""
    # The PIL class (pil_image_processor): its resize is the config's `resample`, bilinear in SD2-depth's.
    return load_pretrained(
        pil_image_processor("DPTImageProcessor").from_pretrained,
        model,
        subfolder=subfolder,
        layout="the stable-diffusion-2-depth layout or a DPT checkpoint",
    )


class DepthEstimator(LoadedModel):
    """frames (uint8 [N,H,W,3]) -> raw DPT depth (float32 [N,h,w]), batched, without gradients."""

    default_model = DEFAULT_MODEL

    def __init__(
        self, model: Any, processor: Any, *, device: torch.device, dtype: torch.dtype, source: str = ""
    ) -> None:
        super().__init__(model, device=device, dtype=dtype, source=source)
        self.processor = processor

    @classmethod
    def _load(cls, target: LoadTarget, model: str) -> DepthEstimator:
        """SD2-depth folder/id (its depth_estimator/ + feature_extractor/), a standalone DPT id/folder,
        or 'tiny'."""
        from transformers import DPTForDepthEstimation  # lazy: seconds to import, only to load

        path = target.path
        layout = "the stable-diffusion-2-depth layout or a DPT checkpoint"
        if is_local(path):
            folder = os.path.expanduser(path)
            if os.path.isdir(os.path.join(folder, "depth_estimator")):
                model_sub, proc_sub = "depth_estimator", "feature_extractor"
                if not os.path.isdir(os.path.join(folder, proc_sub)):
                    raise InputError(
                        f"model folder {model!r} has depth_estimator/ but no feature_extractor/ subfolder: "
                        "copy it from the published stable-diffusion-2-depth checkpoint"
                    )
            elif os.path.isfile(os.path.join(folder, "config.json")):
                model_sub = proc_sub = None
            else:
                raise InputError(
                    f"model folder {model!r} has neither depth_estimator/ (stable-diffusion-2-depth layout) "
                    "nor a DPT config.json: give an SD2-depth folder, a DPT checkpoint, or --model tiny"
                )
        else:
            # Hub id: an SD2-depth repo has the subfolders; a DPT repo (Intel/dpt-*) has them at the root.
            model_sub, proc_sub = _hub_layout(path)
        net = load_pretrained(
            DPTForDepthEstimation.from_pretrained, path, subfolder=model_sub, layout=layout, dtype=target.dtype
        )
        processor = load_dpt_image_processor(path, proc_sub)
        return cls(net, processor, device=target.device, dtype=target.dtype, source=model)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Raw predicted depth per frame, float32 [N, h, w] at the preprocessor's resolution."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [N,H,W,3], got {frames.dtype} {list(frames.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out: list[np.ndarray] = []
        for start in range(0, len(frames), batch_size):
            batch = list(frames[start : start + batch_size])
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(device=self.device, dtype=self.dtype)
            depth = self.model(pixel_values=pixels).predicted_depth
            out.append(depth.float().cpu().numpy())
        if not out:
            return np.zeros((0, 0, 0), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


def _hub_layout(model_id: str) -> tuple[str | None, str | None]:
    """(model subfolder, preprocessor subfolder) for a hub id, decided from the repo's file list.

    Asking the hub for the file list costs one request; when offline, try the cache: if the id was
    downloaded before as SD2-depth, its depth_estimator/ config is there."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "depth_estimator/config.json")
    if isinstance(cached, str):
        return "depth_estimator", "feature_extractor"
    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return None, None
    try:
        from huggingface_hub import list_repo_files

        files = set(list_repo_files(model_id))
    except Exception as e:  # any failure here means "not reachable": report it as such
        raise hub_error(model_id, e, "the stable-diffusion-2-depth layout or a DPT checkpoint") from e
    if "depth_estimator/config.json" in files:
        return "depth_estimator", "feature_extractor"
    return None, None
