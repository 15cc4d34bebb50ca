"""The toy CLIP tokenizer: the tiny builder's byte-level BPE (every word of its vocabulary, the toy
grammar's included, one token), written in SD2's tokenizer file set."""

from __future__ import annotations

import os
from typing import Any


def grammar_words() -> list[str]:
    """Every word a toy caption uses."""
    from toyworld.world import COLOURS, FLOORS, SHAPES, TEXTURES

    return ["a", "and", "on", "floor", *COLOURS, *FLOORS, *[t for t in TEXTURES if t != "plain"], *SHAPES]


def write_toy_tokenizer(folder: str | os.PathLike) -> Any:
    """Write the tokenizer into `folder` (SD2's file set, pad "!") and return it loaded from there."""
    from fixtures.tiny import write_clip_tokenizer

    tok = write_clip_tokenizer(folder, pad_token="!")
    split = [w for w in grammar_words() if len(tok.tokenize(w)) != 1]
    if split:
        raise RuntimeError(f"the toy tokenizer splits grammar words: {split}")
    return tok
