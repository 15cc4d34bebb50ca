"""The results table: one row per (video, prompt), with status, error, output URL, sizes, seconds per
stage and the manifest's carried columns. Written as parquet (pandas, pyarrow, HF datasets read it).

Per-video stages (decode, depth, caption, load, invert) are charged to the video's first row, so the
sum of a `seconds_*` column is the time spent on that stage in the run.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .manifest import Manifest
from .storage import StorageOptions

RESULTS = "results.parquet"

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video", pa.string()),
        ("prompt", pa.string()),
        ("source_prompt", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("output", pa.string()),
        ("num_frames", pa.int32()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("attempts", pa.int32()),
        ("group_size", pa.int32()),  # videos edited in the same editor call (--videos-per-call)
        ("seconds_decode", pa.float64()),
        ("seconds_depth", pa.float64()),
        ("seconds_caption", pa.float64()),
        ("seconds_load", pa.float64()),
        ("seconds_invert", pa.float64()),
        ("seconds_edit", pa.float64()),
        ("seconds_write", pa.float64()),
    ]
)


def build_table(manifest: Manifest, rows: dict[str, dict[str, Any]], schema: pa.Schema = SCHEMA) -> pa.Table:
    """Rows (by unit key) in manifest order, typed by `schema`, then the carried columns."""
    units = [u for u in manifest.units if u.key in rows]
    data = {f.name: [rows[u.key].get(f.name) for u in units] for f in schema}
    table = pa.Table.from_pydict(data, schema=schema)
    carried = manifest.carried_rows([u.row for u in units])
    for name in carried.column_names:
        table = table.append_column(carried.schema.field(name), carried.column(name))
    return table


def write_table(table: pa.Table, url: str, opts: StorageOptions) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(url, buf.getvalue(), opts)


def read_table(url: str, opts: StorageOptions) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(url, opts)))
