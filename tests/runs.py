"""RunOptions for the tests' small runs: the tiny models at 64x64, no progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.method.config import EditConfig
from pipeline.stages.options import RunOptions


def tiny_options(output: Path | str, *, steps: int = 2, config: EditConfig | None = None, **kw: Any) -> RunOptions:
    """A run of the tiny models into `output`; `steps` DDIM steps unless `config` says more."""
    return RunOptions(
        output=str(output),
        model="tiny",
        caption_model="tiny",
        config=config or EditConfig(steps=steps),
        size=(64, 64),
        progress=False,
        **kw,
    )
