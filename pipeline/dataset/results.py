"""The results table: one row per (video, prompt), with status, error, output URL, sizes, seconds per
stage and the manifest's carried columns. Written as parquet (pandas, pyarrow, HF datasets read it).

Per-video stages (decode, depth, caption, load, invert) are charged to the video's first row, so the
sum of a `seconds_*` column is the time spent on that stage in the run.

The schema and the label join are in pipeline/dataset/tables.py. A rerun rebuilds the table from the markers
and keeps what `evaluate` and `augment --min-clip-text/--max-pixel-mse` added to the rows whose
outputs it did not rewrite (metric columns, status 'filtered'): `previous_scores`, `keep_scores`.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError, first_line

from . import storage
from .manifest import Manifest
from .storage import StorageOptions
from .tables import FILTERED, KEY, METRIC_COLUMNS, RESULTS, RESULTS_SCHEMA, Rows, join_labels, read_table

log = logging.getLogger(__name__)


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


def build_table(manifest: Manifest, rows: Rows | Mapping[str, dict[str, Any]]) -> pa.Table:
    """Rows (by unit key: a Rows, or a dict of row dicts) in manifest order, typed by the results
    schema; the metric columns when any row has a metric; then the labels."""
    rows = Rows.of_dicts(rows)
    # Columnar throughout: a Python dict per row was most of a million-unit driver's memory.
    position = pc.index_in(manifest.keys(), value_set=rows.keys_array())  # each unit's row, null: none
    has = pc.is_valid(position)
    taken = rows.table.take(position.filter(has))
    table = taken.select(RESULTS_SCHEMA.names).combine_chunks()
    given = [m for m in METRIC_COLUMNS if m in taken.column_names]
    if any(taken.column(m).null_count < taken.num_rows for m in given):
        for m in METRIC_COLUMNS:  # right after RESULTS_SCHEMA's columns, before the labels
            column = taken.column(m).combine_chunks() if m in given else pa.nulls(taken.num_rows, pa.float64())
            table = table.append_column(pa.field(m, pa.float64()), pc.if_else(pc.is_finite(column), column, None))
    return join_labels(table, manifest.carried_rows(manifest.rows().take(pc.indices_nonzero(has))))


def previous_scores(output: str, opts: StorageOptions) -> pa.Table | None:
    """What `evaluate` and `augment`'s bounds added to the results table a run is about to rewrite:
    per unit key (column `key`), the metric columns and whether the unit was 'filtered' (`filtered`).
    None when there is no table yet (or it cannot be read: then the scores are recomputed by the next
    `evaluate`)."""
    url = storage.join(output, RESULTS)
    try:
        blob = storage.read_bytes(url, opts)
        names = pq.read_schema(io.BytesIO(blob)).names
        # Only the columns kept: a million-row table read whole was a third of a GB in the driver.
        table = pq.read_table(
            io.BytesIO(blob), columns=[c for c in ("output", "status", *METRIC_COLUMNS) if c in names]
        )
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - a damaged table must not stop the run that rewrites it
        log.warning("%s could not be read (%s): its metric columns are not kept", url, type(e).__name__)
        return None
    del blob
    if "output" not in table.column_names:
        return None
    status = table.column("status") if "status" in table.column_names else pa.nulls(table.num_rows, pa.string())
    scored = pc.equal(status, FILTERED)  # the rows that add anything: filtered, or with a metric
    for m in METRIC_COLUMNS:
        if m in table.column_names:
            scored = pc.or_kleene(scored, pc.is_valid(table.column(m)))
    keep = pc.and_kleene(pc.fill_null(scored, False), pc.fill_null(pc.not_equal(table.column("output"), ""), False))
    table = table.filter(pc.fill_null(keep, False))
    keys = pa.array([clip_key(u) for u in table.column("output").to_pylist()], pa.string())
    status = table.column("status") if "status" in table.column_names else pa.nulls(table.num_rows, pa.string())
    columns = {KEY: keys, "filtered": pc.fill_null(pc.equal(status, FILTERED), False)}
    columns |= {m: table.column(m).cast(pa.float64()) for m in METRIC_COLUMNS if m in table.column_names}
    return pa.table(columns)


def keep_scores(rows: Rows, previous: pa.Table | None) -> Rows:
    """`rows` (units done before this run: their outputs were not rewritten) with their metrics and
    'filtered' status from `previous_scores`; a unit redone in this run gets neither (its output is new).
    A metric the previous table holds replaces the row's; a null there leaves the row's as it was."""
    rows = Rows.of_dicts(rows)
    if previous is None or not len(rows) or not previous.num_rows:
        return rows
    table = rows.table
    at = pc.index_in(table.column(KEY), value_set=previous.column(KEY))  # null: no earlier score
    filtered = pc.fill_null(previous.column("filtered").take(at), False)
    status = table.column_names.index("status")
    table = table.set_column(status, "status", pc.if_else(filtered, FILTERED, table.column("status")))
    for m in METRIC_COLUMNS:
        if m not in previous.column_names:
            continue
        before = previous.column(m).take(at)
        if m in table.column_names:
            i = table.column_names.index(m)
            table = table.set_column(i, pa.field(m, pa.float64()), pc.coalesce(before, table.column(m)))
        elif before.null_count < len(before):
            table = table.append_column(pa.field(m, pa.float64()), before)
    return Rows.of_table(table)
