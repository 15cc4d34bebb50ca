"""CLIP scoring for the paper's CLIP-Text and CLIP-Image metrics (see pipeline.quality.metrics).

CLIP model: a hub id or local folder of a `CLIPModel` checkpoint, default
`openai/clip-vit-large-patch14` (the paper's). `"tiny"` is the tiny random CLIP of
`fixtures.tiny`: METRIC VALUES FROM THE TINY CLIP ARE MEANINGLESS, except as a test that the code runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.models.loading import ImageTextModel, LoadTarget, is_local
from pipeline.models.names import DEFAULT_CLIP_MODEL

_CLIP_LAYOUT = "a CLIPModel checkpoint (config.json, weights, tokenizer and preprocessor files)"


def _features(out: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4 returned
    # the tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer(ImageTextModel):
    """CLIP image and text embeddings, L2-normalised, so a dot product is a cosine similarity.

    Load once (`ClipScorer.from_model`), score many videos.
    """

    part = "clip"
    default_model = DEFAULT_CLIP_MODEL
    network = "CLIPModel"
    image_processor_class = "CLIPImageProcessor"
    layout = _CLIP_LAYOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def _load(cls, target: LoadTarget, model: str) -> ClipScorer:
        try:
            return super()._load(target, model)
        except InputError as e:
            if is_local(target.path):
                raise
            # load_pretrained's message points at --model; the metrics' flag is --clip-model.
            raise InputError(
                f"CLIP model {model!r} is not a local folder and could not be loaded from the Hugging Face "
                f"hub (offline?): give a folder with {_CLIP_LAYOUT}, or --clip-model tiny (test values only)"
            ) from e

    @torch.inference_mode()
    def image_embeddings(self, frames: np.ndarray | Sequence[np.ndarray], batch_size: int = 16) -> torch.Tensor:
        """uint8 [N,H,W,3] -> [N,D] float32 unit vectors (on the CPU)."""
        items = [np.asarray(f) for f in frames]
        out = []
        for start in range(0, len(items), batch_size):
            pixels = self.image_processor(images=items[start : start + batch_size], return_tensors="pt")
            x = pixels["pixel_values"].to(device=self.device, dtype=self.dtype)
            out.append(_features(self.model.get_image_features(pixel_values=x)).float().cpu())
        if not out:
            return torch.empty(0, 0)
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    @torch.inference_mode()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        """One prompt -> [D] float32 unit vector (cached: a run scores many videos with one prompt)."""
        if prompt not in self._text_cache:
            tok = self.tokenizer([prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
            e = _features(
                self.model.get_text_features(
                    input_ids=tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device)
                )
            )
            self._text_cache[prompt] = torch.nn.functional.normalize(e.float().cpu()[0], dim=-1)
        return self._text_cache[prompt]


def clip_text_scores(image_embeddings: torch.Tensor, text_embedding: torch.Tensor) -> np.ndarray:
    """Per frame: cos(frame, prompt). [N]"""
    return (image_embeddings @ text_embedding).numpy().astype(np.float64)


def clip_image_scores(image_embeddings: torch.Tensor) -> np.ndarray:
    """Per consecutive pair: cos(frame t, frame t+1). [N-1]"""
    if image_embeddings.shape[0] < 2:
        return np.zeros(0)
    return (image_embeddings[:-1] * image_embeddings[1:]).sum(-1).numpy().astype(np.float64)
