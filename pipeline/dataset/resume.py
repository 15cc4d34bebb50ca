"""Resume: is it done? mark it done; what is left?

One completion marker per (video, prompt) unit, `OUTPUT/markers/<key>.json`, written only after the
unit's mp4 is in place. The marker holds the unit's results row, so the results table of a rerun is
rebuilt from markers without redoing anything. A marker also records the settings fingerprint
(model, size, steps, …): an output made with other settings is not "done" for this run.

Crash anywhere and the worst case is an mp4 without a marker; the rerun redoes that unit and
replaces the file atomically under the same name, so no output ever exists twice.

A unit is done only when its marker AND its mp4 exist (an existence check, not a re-read of the
video): an output deleted after the run is made again. A marker that cannot be read (truncated,
not JSON, not an object) counts as "not done", with one warning per run, and is rewritten when the
unit is redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.utils import get_protocol

from pipeline.errors import Failure, InputError
from pipeline.io.atomic import temp_sibling

from . import storage
from .manifest import Unit, storage_error
from .storage import StorageOptions
from .tables import METRIC_COLUMNS, OK, Rows

log = logging.getLogger(__name__)

MARKERS = "markers"
VIDEOS = "videos"
RUN = "run"  # marker key: the token of the run that wrote it (not a results column)
INDEX = "markers-index.parquet"  # OUTPUT/markers-index.parquet: the markers an object-store scan read
INDEX_PARTS = "markers-index"  # OUTPUT/markers-index/part-*.parquet: the markers a run's driver learned of
LOCK = ".pix2video.lock"  # OUTPUT/.pix2video.lock: held by the run writing there (local outputs)


def check_output_location(output: str, flag: str = "--output") -> None:
    """A local output folder that cannot be written (read-only, no permission, under a file) is a
    usage error before any work, not a traceback after every video failed. Probes with a temporary
    file where the folder is, or would be created, removed at once. Object stores are not probed.
    `flag`: the option the error names (--output, --precompute-store)."""
    if get_protocol(output) in ("http", "https"):
        raise InputError(
            f"{flag} {storage.redact_url(output)}: an HTTP URL cannot hold a run's outputs (it is read-only here, "
            "and resuming lists the markers); write to a local path or an object store (s3://, gs://, ...)"
        )
    if not storage.is_local(output):
        return
    path = Path(storage.normalize(output))
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{flag} {output}: {ancestor} is a file, not a folder; choose another location")
    probe = temp_sibling(ancestor / "probe")
    try:
        probe.open("xb").close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise InputError(
            f"{flag} {output}: cannot write in {ancestor} ({reason}); choose a writable location"
        ) from None
    probe.unlink(missing_ok=True)


def marker_url(output: str, key: str) -> str:
    return storage.join(output, MARKERS, f"{key}.json")


def output_url(output: str, key: str) -> str:
    return storage.join(output, VIDEOS, f"{key}.mp4")


def _parse(blob: bytes) -> dict[str, Any] | None:
    """A marker's row, or None when the marker is unreadable (truncated, not JSON, not an object)."""
    try:
        row = json.loads(blob)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return row if isinstance(row, dict) else None


def _warn_once(keys: list[str], what: str, folder: str, then: str) -> None:
    """One warning for all `keys` of a kind, naming the first few."""
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    log.warning("%d %s under %s (%s); %s", len(keys), what, folder, shown, then)


def is_done(
    output: str, key: str, settings: str, opts: StorageOptions, *, run: str | None = None
) -> dict[str, Any] | None:
    """Is the unit `key` finished with these settings, and is its mp4 still there? Its results row if
    so, else None. (One check; `done_rows` does many at once.) `run` (--overwrite): only a marker
    written by that run counts, so an overwrite redoes every unit once, replacing each old output and
    marker only when the new ones are written, yet a retried video keeps what this run already redid."""
    try:
        blob = storage.read_bytes(marker_url(output, key), opts)
    except FileNotFoundError:
        return None
    row = _parse(blob)
    if row is None:  # the driver's `done_rows` has said so once for the run; the editor only redoes it
        log.debug("completion marker %s could not be read: not done", marker_url(output, key))
        return None
    written_by = row.pop(RUN, None)
    if run is not None and written_by != run:
        return None
    if row.pop("settings", None) != settings or not storage.exists(output_url(output, key), opts):
        return None
    return row


def marker_bytes(row: dict[str, Any], settings: str, run: str | None) -> bytes:
    """A unit's marker as stored: its results row (no metric columns), the settings and the run token.
    The driver rebuilds the same bytes from the rows it learns of (`IndexWriter`)."""
    return json.dumps({**row, "settings": settings, RUN: run}, sort_keys=True, default=str).encode()


def mark_done(
    output: str, key: str, row: dict[str, Any], settings: str, opts: StorageOptions, *, run: str | None = None
) -> None:
    """Record that unit `key` is finished; call only after its output was written. `run`: the token
    of the run that wrote it (see `is_done`)."""
    storage.write_bytes(marker_url(output, key), marker_bytes(row, settings, run), opts)


class _Scan:
    """What `done_rows` makes of the markers it reads, one at a time: rows go straight into Arrow
    columns (Rows), so no marker's bytes or dict outlive their slice."""

    def __init__(self, settings: str, videos: set[str]) -> None:
        self.settings, self.videos = settings, videos
        self.done = Rows(strict=False)
        self.stale = 0
        self.unreadable: list[str] = []
        self.missing: list[str] = []

    def take(self, name: str, blob: bytes) -> None:
        key = name.removesuffix(".json")
        row = _parse(blob)
        if row is None:
            self.unreadable.append(key)
            return
        row.pop(RUN, None)
        if row.pop("settings", None) != self.settings:
            self.stale += 1
        elif f"{key}.mp4" not in self.videos:  # output_url's file name
            self.missing.append(key)
        else:
            self.done.add(key, row)

    def finish(self, output: str) -> Rows:
        table = self.done.table  # types the last slice: rows whose values fit no column are rejected now
        self.unreadable += self.done.rejected
        if self.unreadable:
            folder = storage.join(output, MARKERS)
            _warn_once(self.unreadable, "completion marker(s) could not be read", folder, "those units will be redone")
        if self.missing:
            videos = storage.join(output, VIDEOS)
            _warn_once(self.missing, "finished output(s) are gone", videos, "they will be made again")
        return Rows.of_table(table)  # in name order on local disk; indexed markers first on object stores


def done_rows(output: str, settings: str, opts: StorageOptions) -> tuple[Rows, int]:
    """Results rows of every unit finished with `settings` whose mp4 still exists, by key (a Rows); and
    how many markers were made with other settings (those units will be redone).

    Two listings (markers, videos) instead of one existence check per unit, and the markers read in
    one pass, each row typed into Arrow columns as it is read. On an object store a marker is read
    (one GET, concurrently with others) only when the markers index does not hold it with the ETag
    the listing gives: OUTPUT/markers-index.parquet (what the last scan read) and the parts under
    OUTPUT/markers-index/ (what a run's driver learned as its editors finished, `IndexWriter`), which
    the scan folds into the one file. Unreadable markers are not done; they are reported in one
    warning. An output whose store cannot be reached, or a storage option it does not take, is one
    line (see manifest.storage_error).
    """
    folder = storage.join(output, MARKERS)
    try:
        tags = _list_markers(folder, opts)
        # Listed after the markers: an mp4 is written before its marker, so a listed marker's mp4 is here.
        videos = set(storage.list_names(storage.join(output, VIDEOS), opts)) if tags else set()
        scan = _Scan(settings, videos)
        _read_markers(folder, tags, opts, output, scan.take)
    except (InputError, Failure):
        raise
    except Exception as e:
        found = storage_error(e, f"--output {storage.redact_url(output)}")
        if found is None:
            raise
        raise found from None
    return scan.finish(output), scan.stale


def of_units(done: Rows | dict[str, dict], units: list[Unit], keys: pa.Array | None = None) -> Rows:
    """The rows of `done` whose key is one of `units`' (an output folder may hold other manifests'
    units). `keys`: the units' keys as an array, when the caller has it (Manifest.keys)."""
    done = Rows.of_dicts(done)
    keys = pa.array([u.key for u in units], pa.string()) if keys is None else keys
    return done.filter(pc.is_in(done.keys_array(), value_set=keys))


def _is_marker(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def _list_markers(folder: str, opts: StorageOptions) -> dict[str, str | None]:
    """The markers in `folder` by name, each with what tells its versions apart on an object store
    (ETag and size; None locally, or where the store gives no ETag)."""
    if storage.is_local(folder):
        return {n: None for n in storage.list_names(folder, opts) if _is_marker(n)}
    fs, path = storage.filesystem(folder, opts)
    fs.invalidate_cache(path)  # s3fs caches listings; other processes have written since
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    out: dict[str, str | None] = {}
    for entry in entries:
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if _is_marker(name) and entry.get("type", "file") == "file":
            tag = entry.get("ETag") or entry.get("etag") or entry.get("md5Hash")
            out[name] = f"{tag}:{entry.get('size')}" if tag else None
    return out


_INDEX_SCHEMA = pa.schema([("name", pa.string()), ("tag", pa.string()), ("blob", pa.binary())])
_GET_BATCH = 2000  # markers fetched per concurrent `cat` (their bytes are parsed before the next batch)


def _index_table(blob: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(blob)).select(_INDEX_SCHEMA.names).cast(_INDEX_SCHEMA)


def _read_index(output: str, opts: StorageOptions) -> tuple[pa.Table, list[str]]:
    """The markers index: OUTPUT/markers-index.parquet and every part under OUTPUT/markers-index/, as
    one table (name, tag, blob); and the paths of the parts read. A missing index is empty; a damaged
    file is left out with a warning (its markers are read again)."""
    fs, _ = storage.filesystem(output, opts)
    url = storage.join(output, INDEX)
    tables: list[pa.Table] = []
    try:
        tables.append(_index_table(storage.read_bytes(url, opts)))
    except FileNotFoundError:
        pass
    except Exception as e:  # noqa: BLE001 - a damaged index only costs reads
        log.warning("%s could not be read (%s): its markers are read again", storage.redact_url(url), type(e).__name__)
    parts_url = storage.join(output, INDEX_PARTS)
    names = [n for n in storage.list_names(parts_url, opts) if n.endswith(".parquet") and not n.startswith(".")]
    _, parts_path = storage.filesystem(parts_url, opts)
    paths = [f"{parts_path.rstrip('/')}/{n}" for n in sorted(names)]
    read = fs.cat(paths, on_error="omit") if paths else {}
    for path in paths:
        if path not in read:
            continue
        try:
            tables.append(_index_table(read[path]))
        except Exception as e:  # noqa: BLE001
            log.warning("markers index part %s could not be read (%s)", storage.redact_url(path), type(e).__name__)
    table = pa.concat_tables(tables) if tables else _INDEX_SCHEMA.empty_table()
    return table, [p for p in paths if p in read]


def _write_index(output: str, table: pa.Table, parts: list[str], opts: StorageOptions) -> None:
    """`table` as OUTPUT/markers-index.parquet (one PUT: a reader sees the old index or the new), then
    the parts it holds removed (parts another run writes meanwhile stay for the next scan)."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    url = storage.join(output, INDEX)
    try:
        storage.write_bytes(url, buf.getvalue(), opts)
        if parts:
            fs, _ = storage.filesystem(output, opts)
            fs.rm(parts)
    except Exception as e:  # noqa: BLE001 - the index only saves the next scan's reads
        log.warning("%s could not be written (%s)", storage.redact_url(url), type(e).__name__)


def _read_markers(
    folder: str, tags: dict[str, str | None], opts: StorageOptions, output: str, take: Callable[[str, bytes], None]
) -> None:
    """Hand the bytes of each marker `tags` names in `folder` to `take(name, blob)`, in name order; one
    that vanished since the listing is left out. Local files are read directly (fsspec's per-file
    overhead was most of a rerun's scan). On an object store, a marker the index holds with the tag
    the listing gives is taken from the index; the others are read in concurrent batches, and the
    index is rewritten when any were read or it had parts."""
    if not tags:
        return
    fs, path = storage.filesystem(folder, opts)
    if storage.is_local(folder):
        for name in sorted(tags):
            try:
                with open(os.path.join(path, name), "rb") as f:
                    blob = f.read()
            except FileNotFoundError:
                continue
            take(name, blob)
        return
    listed = {n: t for n, t in tags.items() if t}
    index, parts = _read_index(output, opts) if listed else (_INDEX_SCHEMA.empty_table(), [])
    listing = pa.table({"name": pa.array(list(listed), pa.string()), "tag": pa.array(list(listed.values()))})
    known = listing.join(index, keys=["name", "tag"], join_type="inner") if index.num_rows else index
    if known.num_rows:  # one row per name (a marker may be in the file and in a part)
        names = known.column("name")
        known = known.take(pc.index_in(pc.unique(names), value_set=names))
    known = known.select(_INDEX_SCHEMA.names)
    for batch in known.to_batches(1 << 12):
        for name, blob in zip(batch.column(0).to_pylist(), batch.column(2).to_pylist(), strict=True):
            take(name, blob)
    have = set(known.column("name").to_pylist())
    todo = sorted(n for n in tags if n not in have)
    read: list[pa.Table] = []
    for i in range(0, len(todo), _GET_BATCH):
        paths = {f"{path.rstrip('/')}/{name}": name for name in todo[i : i + _GET_BATCH]}
        got = fs.cat(list(paths), on_error="omit")  # concurrent GETs (fsspec gathers them)
        batch = {paths[p]: blob for p, blob in got.items() if p in paths}
        for name, blob in sorted(batch.items()):
            take(name, blob)
        names = [n for n in batch if listed.get(n)]
        columns = [names, [listed[n] for n in names], [batch[n] for n in names]]
        read.append(pa.table(dict(zip(_INDEX_SCHEMA.names, columns, strict=True)), schema=_INDEX_SCHEMA))
    if listed and (any(t.num_rows for t in read) or parts):
        _write_index(output, pa.concat_tables([known, *read]), parts, opts)


def pending(units: list[Unit], done: Rows | dict[str, dict], keys: pa.Array | None = None) -> list[Unit]:
    """The units still to do, in manifest order. `keys`: the units' keys as an array (Manifest.keys)."""
    if not isinstance(done, Rows):
        return [u for u in units if u.key not in done]
    keys = pa.array([u.key for u in units], pa.string()) if keys is None else keys
    finished = pc.is_in(keys, value_set=done.keys_array()).to_pylist()
    return [u for u, f in zip(units, finished, strict=True) if not f]


class IndexWriter:
    """The driver's side of the markers index on an object store: the rows of the units its editors
    finished (each `add`), written as OUTPUT/markers-index/part-<run>-<n>.parquet every `every` rows or
    `seconds` (one PUT each, atomic), and at `close`. A run that is killed midway so leaves an index
    of all but its last seconds, and the next scan GETs only the markers written since.

    The bytes are rebuilt from the row as `mark_done` wrote it (the row less its metric columns, the
    settings, the run token), with the MD5 the store gives as ETag for an object put whole. Where the
    rebuilt bytes are not the marker's (a unit found done by an earlier run), or the store's ETag is not
    the MD5 (multipart, some encryption, GCS), the tags differ and the scan reads the marker itself:
    the index never stands in for a marker it does not match. A no-op on local disk (markers are read
    directly there)."""

    def __init__(
        self, output: str, settings: str, run: str, opts: StorageOptions, *, every: int = 1000, seconds: float = 30.0
    ) -> None:
        self.output, self.settings, self.run, self.opts = output, settings, run, opts
        self.every, self.seconds = every, seconds
        self.enabled = not storage.is_local(output)
        self.rows: list[tuple[str, str, bytes]] = []
        self.written = 0  # parts written
        self.last = time.monotonic()

    def add(self, rows: list[dict[str, Any]]) -> None:
        """A finished video's rows, as the editor returned them (with their `key`); ok rows have markers."""
        if not self.enabled:
            return
        for row in rows:
            if row.get("status") != OK or not row.get("key"):
                continue
            blob = marker_bytes({k: v for k, v in row.items() if k not in METRIC_COLUMNS}, self.settings, self.run)
            tag = f'"{hashlib.md5(blob, usedforsecurity=False).hexdigest()}":{len(blob)}'
            self.rows.append((f"{row['key']}.json", tag, blob))
        if len(self.rows) >= self.every or (self.rows and time.monotonic() - self.last >= self.seconds):
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if not self.rows:
            return
        columns = [list(c) for c in zip(*self.rows, strict=True)]
        table = pa.table(dict(zip(_INDEX_SCHEMA.names, columns, strict=True)), schema=_INDEX_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        url = storage.join(self.output, INDEX_PARTS, f"part-{self.run}-{self.written:06d}.parquet")
        try:
            storage.write_bytes(url, buf.getvalue(), self.opts)
        except Exception as e:  # noqa: BLE001 - the index only saves the next scan's reads
            log.warning("%s could not be written (%s)", storage.redact_url(url), type(e).__name__)
        self.written += 1
        self.rows = []

    def close(self) -> None:
        self.flush()


class OutputLock:
    """One run at a time per output folder: an exclusive lock on OUTPUT/.pix2video.lock (fcntl, held
    while the run lasts, released by the kernel even when the process is killed). A second run on the
    same folder stops at once with one line, rather than redoing the same work beside the first.
    Object stores have no such lock: there, two runs on one OUTPUT both do the work (the outputs stay
    whole, each written atomically). Not re-entrant; a no-op where fcntl is missing."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.file: Any = None

    def __enter__(self) -> OutputLock:
        if not storage.is_local(self.output):
            return self
        try:
            import fcntl  # here: an ImportError off POSIX means no lock, not a module that cannot load
        except ImportError:  # not POSIX
            return self
        folder = Path(storage.normalize(self.output))
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / LOCK, "a+")  # noqa: SIM115 - held open for the run's duration
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise InputError(
                f"--output {self.output}: another pix2video run ({holder}) is writing there; wait for it to "
                "finish (then rerun to pick up what is left), or choose another --output"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None
