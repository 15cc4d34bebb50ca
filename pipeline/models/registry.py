"""Named model folders: names such as 'tiny' and 'toy' that mean a folder of ours rather than a hub id.

A package registers a name with a Python entry point in the group `pix2video.models`, whose object is
a function of no arguments that returns the folder (building it first if it has to). Ours, declared
in pyproject.toml:

    [project.entry-points."pix2video.models"]
    tiny = "fixtures.tiny:tiny_model_dir"   # tiny random-weight models, built into a cache on first use
    toy = "toyworld:toy_model_dir"          # the toy world's committed models

So the loader (`resolve_model`) never imports the packages that make those folders, and another
package can add a name without touching `pipeline/`. A name nobody registered is not a name: the
loader treats it as a hub id or a local folder, as before.

Models that are built in memory rather than kept in a folder (the real-size SD2-depth UNet and VAE with
random weights, which `pix2video bench` times: gigabytes no one should write to disk) are registered
the same way in the group `pix2video.builders`, whose object takes (dtype, device) and returns the
loaded models:

    [project.entry-points."pix2video.builders"]
    random-sd2 = "fixtures.tiny:build_random_real_size_models"
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

GROUP = "pix2video.models"
BUILDERS = "pix2video.builders"


def registered() -> dict[str, EntryPoint]:
    """The registered names and their entry points (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def builder(name: str) -> Callable[..., Any] | None:
    """The in-memory model builder registered under `name` (imported now), or None."""
    found = {ep.name: ep for ep in entry_points(group=BUILDERS)}.get(name)
    return None if found is None else found.load()


def folder_function(name: str) -> Callable[[], Path] | None:
    """The function registered under `name` (imported now), or None when nobody registered it."""
    ep = registered().get(name)
    return None if ep is None else ep.load()


def model_folder(name: str) -> Path | None:
    """The folder registered under `name` (its function is called: it may build the folder first), or
    None when `name` is not a registered name."""
    make = folder_function(name)
    return None if make is None else Path(make())


def resolve_model(model: str, part: str | None = None) -> str:
    """A registered name (this registry) -> its folder: 'tiny' -> the tiny-model folder
    (built once into the cache, atomically), 'toy' -> the committed toy-world folder; anything else is
    returned unchanged (a hub id or a local folder). `part` ('blip', 'clip'): the sub-folder of that
    name inside a registered folder."""
    found = model_folder(model)
    if found is None:
        return model
    folder = str(found)
    return os.path.join(folder, part) if part else folder
