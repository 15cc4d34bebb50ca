"""Resume: is it done? mark it done; what is left?

One completion marker per (video, prompt) unit, `OUTPUT/markers/<key>.json`, written only after the
unit's mp4 is in place. The marker holds the unit's results row, so the results table of a rerun is
rebuilt from markers without redoing anything. A marker also records the settings fingerprint
(model, size, steps, …): an output made with other settings is not "done" for this run.

Crash anywhere and the worst case is an mp4 without a marker; the rerun redoes that unit and
replaces the file atomically under the same name, so no output ever exists twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from . import storage
from .manifest import Unit
from .storage import StorageOptions

log = logging.getLogger(__name__)

MARKERS = "markers"
VIDEOS = "videos"


def marker_url(output: str, key: str) -> str:
    return storage.join(output, MARKERS, f"{key}.json")


def output_url(output: str, key: str) -> str:
    return storage.join(output, VIDEOS, f"{key}.mp4")


def is_done(output: str, key: str, settings: str, opts: StorageOptions) -> dict[str, Any] | None:
    """Is the unit `key` finished with these settings? Its results row if so, else None.
    (One check; `done_rows` does many at once.)"""
    try:
        row = json.loads(storage.read_bytes(marker_url(output, key), opts))
    except FileNotFoundError:
        return None
    return row if row.pop("settings", None) == settings else None


def mark_done(output: str, key: str, row: dict[str, Any], settings: str, opts: StorageOptions) -> None:
    """Record that unit `key` is finished; call only after its output was written."""
    data = json.dumps({**row, "settings": settings}, sort_keys=True, default=str).encode()
    storage.write_bytes(marker_url(output, key), data, opts)


def done_rows(output: str, settings: str, opts: StorageOptions) -> tuple[dict[str, dict], int]:
    """Results rows of every unit finished with `settings`, by key; and how many markers were made
    with other settings (those units will be redone)."""
    folder = storage.join(output, MARKERS)
    names = [n for n in storage.list_names(folder, opts) if n.endswith(".json") and not n.startswith(".")]
    blobs = storage.read_many([storage.join(folder, n) for n in names], opts)
    done: dict[str, dict] = {}
    stale = 0
    for url, blob in blobs.items():
        try:
            row = json.loads(blob)
        except ValueError:
            continue  # cannot happen with atomic writes; treat as not done
        if row.pop("settings", None) == settings:
            done[url.rsplit("/", 1)[-1].removesuffix(".json")] = row
        else:
            stale += 1
    return done, stale


def pending(units: list[Unit], done: dict[str, dict]) -> list[Unit]:
    """The units still to do, in manifest order."""
    return [u for u in units if u.key not in done]
