"""The dataset verbs' work above the runner: relabel's labels table, augment's units and its table.

relabel:  manifest ─► precompute_dataset ─► labels_table ─► OUTPUT/labels.parquet
augment:  manifest ─► augment_manifest (K templates per video, seeded by its id) ─► run_dataset
          ─► augmented_table (the ok clips, ready to train on) ─► OUTPUT/augmented.parquet
"""

from __future__ import annotations

import json
import random
from typing import Any

import pyarrow as pa

from pipeline.stages.record import PrecomputeRecord  # what relabel's labels are made of

from . import storage
from .manifest import Manifest, Unit, VideoJob, unit_key
from .tables import AUGMENTED_SCHEMA, LABELS_SCHEMA, OK, from_rows, join_labels


def labels_table(manifest: Manifest, metas: list[tuple[VideoJob, PrecomputeRecord]]) -> pa.Table:
    """One row per video (its precompute record, ok or failed), then the manifest's labels."""
    rows = []
    for job, meta in metas:
        ok = meta.status == OK
        rows.append(
            {
                "num_frames": meta.num_frames,
                "fps": meta.fps,
                "width": meta.width,
                "height": meta.height,
                "src_width": meta.src_width,
                "src_height": meta.src_height,
                "seconds_decode": meta.seconds_decode,
                "seconds_depth": meta.seconds_depth,
                "seconds_caption": meta.seconds_caption,
                "id": job.id,
                "video": storage.redact_url(job.video),
                "status": "ok" if ok else "failed",
                "error": meta.error,
                "caption": meta.caption,
                "source_prompt": job.source_prompt,
                "frames": meta.frames if ok else None,
                "depth": meta.depth if ok else None,
            }
        )
    table = from_rows(rows, LABELS_SCHEMA)
    return join_labels(table, manifest.carried_rows([job.units[0].row for job, _ in metas]))


def choose(templates: list[str], video_id: str, k: int) -> list[str]:
    """K distinct templates for one video, the same on every run (seeded by the id).

    Distinct, because editing is deterministic given (video, prompt): two variants with one
    template would be the same clip twice.
    """
    if k >= len(templates):
        return list(templates)
    rng = random.Random(json.dumps(["augment", video_id]))
    picked = set(rng.sample(range(len(templates)), k))
    return [t for i, t in enumerate(templates) if i in picked]


def augment_manifest(source: Manifest, templates: list[str], k: int) -> tuple[Manifest, dict[str, int]]:
    """The units of an augment run: `k` templates per video of `source`; and each unit's variant
    (the template's position in `templates`)."""
    units: list[Unit] = []
    variant_of: dict[str, int] = {}
    for job in source.videos():
        first = job.units[0]
        for template in choose(templates, job.id, k):
            key = unit_key(job.name, template)
            units.append(Unit(first.id, first.name, first.video, template, first.source_prompt, first.row, key))
            variant_of[key] = templates.index(template)
    return Manifest(units=units, carried=source.carried, source=source.source), variant_of


def augmented_table(manifest: Manifest, rows: dict[str, dict[str, Any]], variant_of: dict[str, int]) -> pa.Table:
    """One row per new clip that was made and kept (status ok: not failed, not filtered), then the
    source's labels."""
    out, label_rows = [], []
    for u in manifest.units:
        r = rows.get(u.key)
        if not r or r.get("status") != OK:
            continue
        out.append(
            {
                "id": u.key,
                "video": r["output"],
                "source_id": u.id,
                "source_video": storage.redact_url(u.video),
                "prompt": r["prompt"],
                "augmentation": u.prompt,
                "variant": variant_of[u.key],
                "caption": r.get("source_prompt"),
                **{c: r.get(c) for c in ("num_frames", "fps", "width", "height")},
            }
        )
        label_rows.append(u.row)
    return join_labels(from_rows(out, AUGMENTED_SCHEMA), manifest.carried_rows(label_rows))
