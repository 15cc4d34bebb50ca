"""The toy CLIP tokenizer: the tiny builder's byte-level BPE (every word of its vocabulary, the toy
grammar's included, one token), written in SD2's tokenizer file set; and the config of the CLIP text
towers that read it (the UNet's text encoder and the metrics' CLIP)."""

from __future__ import annotations

import os
from typing import Any


def grammar_words() -> list[str]:
    """Every word a toy caption uses."""
    from toyworld.world import COLOURS, FLOORS, SHAPES, TEXTURES

    return ["a", "and", "on", "floor", *COLOURS, *FLOORS, *[t for t in TEXTURES if t != "plain"], *SHAPES]


def text_tower_config(tokenizer: Any, *, width: int, intermediate: int, hidden_act: str) -> Any:
    """A CLIP text tower over the toy tokenizer: 3 layers, 2 heads, 77 positions, projection = width."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        projection_dim=width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def write_toy_tokenizer(folder: str | os.PathLike) -> Any:
    """Write the tokenizer into `folder` (SD2's file set, pad "!") and return it loaded from there."""
    from fixtures.tiny import write_clip_tokenizer

    tok = write_clip_tokenizer(folder, pad_token="!")
    split = [w for w in grammar_words() if len(tok.tokenize(w)) != 1]
    if split:
        raise RuntimeError(f"the toy tokenizer splits grammar words: {split}")
    return tok
