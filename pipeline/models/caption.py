"""Source prompts from an image captioner (BLIP).

Pix2Video inverts every frame with a text prompt that describes the input (the "source prompt");
when the user gives none we caption the anchor frame. Default model:
`Salesforce/blip-image-captioning-large`; any BLIP-for-captioning hub id or local folder works, and
'tiny' is the tiny random BLIP of `fixtures.tiny` (meaningless captions; for tests, demos, benchmarks).

Captions are deterministic: greedy decoding, no sampling, a fixed token budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.models.loading import ImageTextModel
from pipeline.models.names import DEFAULT_CAPTION_MODEL

# Returned instead of an empty caption. A random (tiny) model can emit only special tokens, and a
# real one could in principle too; the editor always needs a non-empty source prompt (an empty one
# would silently turn inversion into unconditional inversion), so we fall back to a neutral
# description that is true of every input.
FALLBACK_CAPTION = "a video frame"
MAX_NEW_TOKENS = 30

_LAYOUT = "a BLIP captioning checkpoint (e.g. Salesforce/blip-image-captioning-large)"


class Captioner(ImageTextModel):
    """uint8 images [N,H,W,3] (or a list of [H,W,3]) -> one caption string per image."""

    part = "blip"
    default_model = DEFAULT_CAPTION_MODEL
    network = "BlipForConditionalGeneration"
    image_processor_class = "BlipImageProcessor"
    layout = _LAYOUT
    max_new_tokens = MAX_NEW_TOKENS

    @torch.inference_mode()
    def __call__(self, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 8) -> list[str]:
        """Greedy captions, whitespace-stripped, never empty (see FALLBACK_CAPTION)."""
        items = list(images)
        for im in items:
            if im.ndim != 3 or im.shape[-1] != 3 or im.dtype != np.uint8:
                raise ValueError(f"images must be uint8 [H,W,3], got {im.dtype} {list(im.shape)}")
        captions: list[str] = []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            ids = self.model.generate(
                pixel_values=pixels.to(device=self.device, dtype=self.dtype),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
            )
            for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True):
                text = " ".join(text.split())
                captions.append(text or FALLBACK_CAPTION)
        return captions
