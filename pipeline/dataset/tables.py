"""The data contracts: the tables the dataset verbs write, and the one way labels join them.

    results.parquet    `run`, `augment`: one row per (video, prompt); RESULTS_SCHEMA, then the metric
                       columns once `evaluate` (or `--metrics`) scored the run, then the labels
    labels.parquet     `relabel`: one row per video; LABELS_SCHEMA, then the labels
    augmented.parquet  `augment`: one row per new clip; AUGMENTED_SCHEMA, then the source's labels

A label is any manifest column other than `video`, `prompt`, `id`, `source_prompt`, `shots` and
`mask`; it is carried to every row made from its manifest row. Its name may not be one the table
fills itself (`reserved`): a manifest with a label `group_size` or `clip_text` is refused before any
work (one line, exit 2), since two columns of one name make a parquet file unreadable, and a carried
value would silently replace a computed one.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.quality.names import METRIC_NAMES

from . import storage
from .storage import StorageOptions

RESULTS = "results.parquet"
LABELS = "labels.parquet"
AUGMENTED = "augmented.parquet"

_ARROW = {
    "str": pa.string(),
    "int": pa.int32(),
    "float": pa.float64(),
    "list[int]": pa.list_(pa.int32()),
    "list[str]": pa.list_(pa.string()),
}


@dataclass
class ResultRow:
    """One row of results.parquet: one (video, prompt). RESULTS_SCHEMA is derived from these fields (in
    this order, typed by their annotations); the edit stage and the driver build rows only through it.

    Per-video stages (decode, depth, caption, load, invert) are charged to the video's first row, so the
    sum of a `seconds_*` column is the time spent on that stage in the run."""

    key: str = field(default="", metadata={"column": False})  # the unit's key: names its mp4 and marker
    id: str | None = None
    video: str | None = None  # the input's URL, credentials redacted
    prompt: str | None = None
    source_prompt: str | None = None
    status: str | None = None  # ok | failed | filtered (outside augment's --min-clip-text/--max-pixel-mse)
    error: str | None = None
    output: str | None = None
    num_frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    # Shot cuts (pipeline/io/shots.py): the first frame of every shot ([0] without a cut), each shot
    # edited as a video of its own, with its own source prompt and target prompt ({caption} filled
    # per shot); `prompt` and `source_prompt` are the first shot's.
    shots: list[int] | None = None
    shot_source_prompts: list[str] | None = None
    shot_prompts: list[str] | None = None
    mask: str | None = None  # the manifest's mask input of a masked (local) edit, else null
    anchor_refresh: int | None = None  # --anchor-refresh K of the edit (0: the paper's single anchor)
    attempts: int | None = None
    group_size: int | None = None  # videos edited in the same editor call (--videos-per-call)
    seconds_decode: float = 0.0
    seconds_depth: float = 0.0
    seconds_caption: float = 0.0
    seconds_load: float = 0.0
    seconds_invert: float = 0.0
    seconds_edit: float = 0.0
    seconds_write: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The row as it travels and as its marker stores it (JSON-shaped)."""
        return asdict(self)


def _schema_of(row: type) -> pa.Schema:
    columns = [f for f in fields(row) if f.metadata.get("column", True)]
    return pa.schema([(f.name, _ARROW[str(f.type).replace(" | None", "")]) for f in columns])


RESULTS_SCHEMA = _schema_of(ResultRow)

INPUT_PREFIX = "input_"  # the same metrics on the input video: the baseline
METRIC_COLUMNS = (*METRIC_NAMES, *(INPUT_PREFIX + n for n in METRIC_NAMES))
METRICS_SCHEMA = pa.schema([(name, pa.float64()) for name in METRIC_COLUMNS])

OK, FAILED, FILTERED = "ok", "failed", "filtered"
SCORED = (OK, FILTERED)  # statuses that have an output to score

LABELS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("caption", pa.string()),
        ("source_prompt", pa.string()),
        ("num_frames", pa.int32()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("src_width", pa.int32()),
        ("src_height", pa.int32()),
        ("frames", pa.string()),
        ("depth", pa.string()),
        ("seconds_decode", pa.float64()),
        ("seconds_depth", pa.float64()),
        ("seconds_caption", pa.float64()),
    ]
)

AUGMENTED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video", pa.string()),
        ("source_id", pa.string()),
        ("source_video", pa.string()),
        ("prompt", pa.string()),
        ("augmentation", pa.string()),
        ("variant", pa.int32()),
        ("caption", pa.string()),
        ("num_frames", pa.int32()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)

SCHEMAS = {RESULTS: RESULTS_SCHEMA, LABELS: LABELS_SCHEMA, AUGMENTED: AUGMENTED_SCHEMA}


def reserved(table: str) -> frozenset[str]:
    """The column names `table` fills itself, which no label may take (results: metric columns too)."""
    names = set(SCHEMAS[table].names)
    if table == RESULTS:
        names |= set(METRIC_COLUMNS)
    return frozenset(names)


def check_labels(labels: Iterable[str], tables: Sequence[str], where: str) -> None:
    """Usage error (before any work) when a label is named like a column of one of `tables`."""
    for table in tables:
        clash = sorted(set(labels) & reserved(table))
        if clash:
            raise InputError(
                f"{where}: label column(s) {', '.join(repr(c) for c in clash)} clash with columns that "
                f"{table} fills itself; rename them in the manifest"
            )


def from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """`rows` typed by `schema` (keys not in it are left out; missing ones are null)."""
    return pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)


KEY = "key"  # Rows' column of unit keys (not a results column)
_ROWS_SLICE = 1 << 14  # rows a Rows keeps as dicts before typing them into Arrow columns


def _metric_value(v: Any) -> float | None:
    """A metric as Rows holds it: a number as a float, another non-null value as NaN (build_table
    stores non-finite values as null, yet a value given still makes the metric columns appear)."""
    if v is None:
        return None
    return float(v) if isinstance(v, int | float) else math.nan


class Rows(Mapping[str, dict[str, Any]]):
    """Results rows by unit key, held as Arrow columns (RESULTS_SCHEMA, the metric columns any row
    gave, and the key): a million rows as Python dicts took about 2 kB each in the driver, as
    columns a few hundred bytes. Rows are added one at a time (`add`) and typed in slices of
    _ROWS_SLICE. A key added again replaces its earlier row, as in a dict.

    Reads as a mapping of key -> row dict (every column, null as None) for the few callers that
    look rows up one by one; the driver's own steps (resume.of_units, resume.pending, build_table,
    keep_scores) work on `table` with Arrow compute instead.

    `strict=False` (rows read from markers): a row whose values do not fit the schema is left out
    and its key listed in `rejected`, instead of the error."""

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self.rejected: list[str] = []
        self._parts: list[pa.Table] = []
        self._buffer: list[dict[str, Any]] = []
        self._table: pa.Table | None = None
        self._positions: dict[str, int] | None = None

    @classmethod
    def of_table(cls, table: pa.Table) -> Rows:
        out = cls()
        out._parts = [table]
        return out

    @classmethod
    def of_dicts(cls, rows: Mapping[str, dict[str, Any]]) -> Rows:
        """From rows by key (a plain dict, e.g. pipeline.stages.items.result_rows)."""
        if isinstance(rows, Rows):
            return rows
        out = cls()
        for key, row in rows.items():
            out.add(key, row)
        return out

    @staticmethod
    def merged(first: Rows, *rest: Rows) -> Rows:
        """One Rows of all given; where a key is in several, the row of the earliest argument."""
        tables = [r.table for r in (first, *rest) if len(r)]
        if not tables:
            return Rows()
        table = pa.concat_tables(list(reversed(tables)), promote_options="default")
        return Rows.of_table(_last_of_each_key(table))

    def add(self, key: str, row: dict[str, Any]) -> None:
        self._buffer.append({**row, KEY: key})
        self._table, self._positions = None, None
        if len(self._buffer) >= _ROWS_SLICE:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._parts.append(self._typed(self._buffer))
            self._buffer = []

    def _typed(self, rows: list[dict[str, Any]]) -> pa.Table:
        metrics = [m for m in METRIC_COLUMNS if any(m in r for r in rows)]
        schema = pa.schema([pa.field(KEY, pa.string()), *RESULTS_SCHEMA, *(pa.field(m, pa.float64()) for m in metrics)])
        columns = {f.name: [r.get(f.name) for r in rows] for f in schema if f.name not in metrics}
        columns |= {m: [_metric_value(r.get(m)) for r in rows] for m in metrics}
        try:
            return pa.Table.from_pydict(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            if self.strict or len(rows) == 1:
                if self.strict:
                    raise
                self.rejected.append(str(rows[0].get(KEY)))
                return schema.empty_table()
            return pa.concat_tables([self._typed([r]) for r in rows], promote_options="default")

    @property
    def table(self) -> pa.Table:
        """Every row: a key column, RESULTS_SCHEMA's columns, then the metric columns rows gave."""
        if self._table is None:
            self._flush()
            if not self._parts:
                self._table = pa.schema([pa.field(KEY, pa.string()), *RESULTS_SCHEMA]).empty_table()
            else:
                table = pa.concat_tables(self._parts, promote_options="default")
                self._table = _last_of_each_key(table)
            self._parts = [self._table]
        return self._table

    def keys_array(self) -> pa.ChunkedArray:
        return self.table.column(KEY)

    def filter(self, mask: pa.Array | pa.ChunkedArray) -> Rows:
        return Rows.of_table(self.table.filter(mask))

    def with_status(self, keys: Iterable[str], status: str) -> Rows:
        """These rows, with `status` on those of `keys`."""
        table = self.table
        hit = pc.is_in(table.column(KEY), value_set=pa.array(list(keys), pa.string()))
        i = table.column_names.index("status")
        return Rows.of_table(table.set_column(i, "status", pc.if_else(hit, status, table.column("status"))))

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[str]:
        for chunk in self.keys_array().chunks:
            yield from chunk.to_pylist()

    def __getitem__(self, key: str) -> dict[str, Any]:
        if self._positions is None:
            self._positions = {k: i for i, k in enumerate(self)}
        row = self.table.slice(self._positions[key], 1).to_pylist()[0]
        del row[KEY]
        return row


def _last_of_each_key(table: pa.Table) -> pa.Table:
    """`table` with one row per key, the last one given (as a dict keeps the last value); in order."""
    keys = table.column(KEY)
    if pc.count_distinct(keys).as_py() == table.num_rows:
        return table
    n = table.num_rows
    reverse = keys.take(pa.array(range(n - 1, -1, -1), pa.int64()))
    last = pc.index_in(pc.unique(reverse), value_set=reverse)  # first in reverse: last given
    keep = pc.subtract(n - 1, last.cast(pa.int64()))
    return table.take(pc.take(keep, pc.array_sort_indices(keep)))


def join_labels(table: pa.Table, labels: pa.Table) -> pa.Table:
    """`table` with the label columns appended, row for row (`labels` holds one row per table row)."""
    if labels.num_columns and labels.num_rows != table.num_rows:
        raise ValueError(f"{labels.num_rows} label rows for {table.num_rows} table rows")
    clash = sorted(set(labels.column_names) & set(table.column_names))
    if clash:  # load_manifest refuses such manifests; this keeps a table from ever holding two
        raise InputError(f"label column(s) {', '.join(clash)} clash with the table's own; rename them")
    for name in labels.column_names:
        table = table.append_column(labels.schema.field(name), labels.column(name))
    return table


def metric_values(row: dict[str, Any]) -> dict[str, float | None]:
    """The metric columns of a row, non-finite values as None (stored as null)."""
    out: dict[str, float | None] = {}
    for name in METRIC_COLUMNS:
        v = row.get(name)
        out[name] = float(v) if isinstance(v, int | float) and math.isfinite(v) else None
    return out


def with_metric_columns(table: pa.Table, values: list[dict[str, Any]]) -> pa.Table:
    """`table` with the metric columns set from `values` (one dict per row), placed right after
    RESULTS_SCHEMA's columns, before the labels."""
    for name in METRIC_COLUMNS:
        if name in table.column_names:
            table = table.remove_column(table.column_names.index(name))
    at = len(RESULTS_SCHEMA)
    for offset, name in enumerate(METRIC_COLUMNS):
        column = pa.array([metric_values(v)[name] for v in values], type=pa.float64())
        table = table.add_column(min(at + offset, table.num_columns), pa.field(name, pa.float64()), column)
    return table


def write_table(table: pa.Table, url: str, opts: StorageOptions) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(url, buf.getvalue(), opts)


def read_table(url: str, opts: StorageOptions) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(url, opts)))
