"""The results table: one row per (video, prompt), with status, error, output URL, sizes, seconds per
stage and the manifest's carried columns. Written as parquet (pandas, pyarrow, HF datasets read it).

Per-video stages (decode, depth, caption, load, invert) are charged to the video's first row, so the
sum of a `seconds_*` column is the time spent on that stage in the run.

The schema and the label join are in pipeline/dataset/tables.py. A rerun rebuilds the table from the markers
and keeps what `evaluate` and `augment --min-clip-text/--max-pixel-mse` added to the rows whose
outputs it did not rewrite (metric columns, status 'filtered'): `previous_scores`, `keep_scores`.
"""

from __future__ import annotations

import logging
import os
import posixpath
from typing import Any

import pyarrow as pa

from pipeline.errors import InputError, first_line

from . import storage
from .manifest import Manifest
from .storage import StorageOptions
from .tables import (
    FILTERED,
    METRIC_COLUMNS,
    RESULTS,
    RESULTS_SCHEMA,
    from_rows,
    join_labels,
    read_table,
    with_metric_columns,
)

log = logging.getLogger(__name__)
_SLICE = 1 << 16  # rows typed at a time by build_table


def read_results(output: str, opts: StorageOptions) -> pa.Table:
    """OUTPUT/results.parquet of a finished run, for the verbs that read one (report, evaluate): a
    missing, unreadable or foreign table is one line (InputError) naming it, and nothing is written."""
    url = storage.join(output, RESULTS)
    if storage.is_local(output) and os.path.isfile(storage.normalize(output)):  # e.g. `report clip.mp4`
        raise InputError(f"{output}: is a file, not a run's output folder; give the OUTPUT of `pix2video run`")
    try:
        table = read_table(url, opts)
    except FileNotFoundError:
        raise InputError(
            f"{url}: no results table; give the OUTPUT of a finished `pix2video run` or `augment`"
        ) from None
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputError(
            f"{url}: cannot be read as a parquet table ({first_line(e, 120)}); rerun `pix2video run` with the "
            "same flags to rebuild it from the completion markers"
        ) from None
    missing = [c for c in ("video", "prompt", "status", "output") if c not in table.column_names]
    if missing:
        raise InputError(f"{url}: not a results table (no column {missing[0]!r})")
    return table


def clip_key(output_url: str) -> str:
    """The unit key of an output: its file name without extension (resume.output_url's inverse)."""
    base = posixpath.basename(output_url.rstrip("/"))
    return base.rsplit(".", 1)[0] if "." in base else base


def build_table(manifest: Manifest, rows: dict[str, dict[str, Any]]) -> pa.Table:
    """Rows (by unit key) in manifest order, typed by the results schema; the metric columns when
    any row has a metric; then the labels."""
    units = [u for u in manifest.units if u.key in rows]
    ordered = [rows[u.key] for u in units]
    # In slices: one Python list per column for all rows at once was the peak of a million-row table.
    slices = [from_rows(ordered[i : i + _SLICE], RESULTS_SCHEMA) for i in range(0, len(ordered), _SLICE)]
    table = pa.concat_tables(slices).combine_chunks() if slices else from_rows([], RESULTS_SCHEMA)
    if any(r.get(name) is not None for r in ordered for name in METRIC_COLUMNS):
        table = with_metric_columns(table, ordered)
    return join_labels(table, manifest.carried_rows([u.row for u in units]))


def previous_scores(output: str, opts: StorageOptions) -> dict[str, dict[str, Any]]:
    """What `evaluate` and `augment`'s bounds added to the results table a run is about to rewrite:
    per unit key, the metric columns and a 'filtered' status. Empty when there is no table yet (or
    it cannot be read: then the scores are recomputed by the next `evaluate`)."""
    url = storage.join(output, RESULTS)
    try:
        table = read_table(url, opts)
    except FileNotFoundError:
        return {}
    except Exception as e:  # noqa: BLE001 - a damaged table must not stop the run that rewrites it
        log.warning("%s could not be read (%s): its metric columns are not kept", url, type(e).__name__)
        return {}
    if "output" not in table.column_names:
        return {}
    names = [c for c in ("status", *METRIC_COLUMNS) if c in table.column_names]
    out: dict[str, dict[str, Any]] = {}
    for output_url, row in zip(table.column("output").to_pylist(), table.select(names).to_pylist(), strict=True):
        if output_url:
            kept = {k: v for k, v in row.items() if k in METRIC_COLUMNS and v is not None}
            if row.get("status") == FILTERED:
                kept["status"] = FILTERED
            if kept:
                out[clip_key(output_url)] = kept
    return out


def keep_scores(rows: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`rows` (units done before this run: their outputs were not rewritten) with their metrics and
    'filtered' status from `previous_scores`; a unit redone in this run gets neither (its output is new)."""
    return {key: {**row, **previous[key]} if key in previous else row for key, row in rows.items()}
