"""The stages' rows in a Ray Data pipeline: one row per video, the manifest's units in it as JSON.

    ds = ray.data.from_items(video_items(manifest.videos()))
    ds = ds.map_batches(PrecomputeStage, ...).map_batches(EditStage, ...)     # adds `record`, then `rows`
    rows = result_rows(ds.take_all())                                          # by unit key, for build_table

Ray Data moves columns as Arrow, whose nested types would change a unit's fields (tuples, nulls); a
JSON string per video carries them exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from pipeline.dataset.manifest import Unit, VideoJob


def video_items(jobs: Sequence[VideoJob]) -> list[dict[str, Any]]:
    """One row per video: what the precompute stage reads (`name`, `video`, `need_caption`, `shots`)
    and the units the edit stage edits (`units`)."""
    return [
        {
            "name": job.name,
            "video": job.video,
            "need_caption": job.source_prompt is None,
            "shots": list(job.shots) if job.shots is not None else [],
            "units": json.dumps([asdict(u) for u in job.units]),
        }
        for job in jobs
    ]


def units_of(text: str) -> list[Unit]:
    """A row's `units` back as the manifest's units."""
    units = []
    for u in json.loads(text):
        shots = u.get("shots")
        units.append(Unit(**{**u, "shots": tuple(shots) if shots is not None else None}))
    return units


def result_rows(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The edit stage's output rows, by unit key (the key itself left out, as the results table takes them)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        for row in json.loads(item["rows"]):
            row = dict(row)
            out[row.pop("key")] = row
    return out
