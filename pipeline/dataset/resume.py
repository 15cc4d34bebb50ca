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

import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from fsspec.utils import get_protocol

from pipeline.errors import Failure, InputError
from pipeline.io.atomic import temp_sibling

from . import storage
from .manifest import Unit, storage_error
from .storage import StorageOptions

log = logging.getLogger(__name__)

MARKERS = "markers"
VIDEOS = "videos"
RUN = "run"  # marker key: the token of the run that wrote it (not a results column)
INDEX = "markers-index.parquet"  # OUTPUT/markers-index.parquet: the markers an object-store scan read
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


def mark_done(
    output: str, key: str, row: dict[str, Any], settings: str, opts: StorageOptions, *, run: str | None = None
) -> None:
    """Record that unit `key` is finished; call only after its output was written. `run`: the token
    of the run that wrote it (see `is_done`)."""
    data = json.dumps({**row, "settings": settings, RUN: run}, sort_keys=True, default=str).encode()
    storage.write_bytes(marker_url(output, key), data, opts)


def done_rows(output: str, settings: str, opts: StorageOptions) -> tuple[dict[str, dict], int]:
    """Results rows of every unit finished with `settings` whose mp4 still exists, by key; and how many
    markers were made with other settings (those units will be redone).

    Two listings (markers, videos) instead of one existence check per unit, and the markers read in
    one pass (concurrently on object stores). On an object store the markers read are kept in
    OUTPUT/markers-index.parquet with their ETags, so the next scan reads only markers written or
    changed since (one GET each) instead of all of them. Unreadable markers are not done; they are
    reported in one warning. An output whose store cannot be reached, or a storage option it does not
    take, is one line (see manifest.storage_error).
    """
    folder = storage.join(output, MARKERS)
    try:
        tags = _list_markers(folder, opts)
        blobs = _read_markers(folder, tags, opts, storage.join(output, INDEX))
        videos = set(storage.list_names(storage.join(output, VIDEOS), opts)) if blobs else set()
    except (InputError, Failure):
        raise
    except Exception as e:
        found = storage_error(e, f"--output {storage.redact_url(output)}")
        if found is None:
            raise
        raise found from None
    done: dict[str, dict] = {}
    memo: dict[Any, Any] = {}
    stale = 0
    unreadable: list[str] = []
    missing: list[str] = []
    for name, blob in sorted(blobs.items()):
        key = name.removesuffix(".json")
        row = _compact(_parse(blob), memo)
        if row is not None:
            row.pop(RUN, None)
        if row is None:
            unreadable.append(key)
        elif row.pop("settings", None) != settings:
            stale += 1
        elif f"{key}.mp4" not in videos:  # output_url's file name
            missing.append(key)
        else:
            done[key] = row
    if unreadable:
        folder = storage.join(output, MARKERS)
        _warn_once(unreadable, "completion marker(s) could not be read", folder, "those units will be redone")
    if missing:
        _warn_once(missing, "finished output(s) are gone", storage.join(output, VIDEOS), "they will be made again")
    return done, stale


def of_units(done: dict[str, dict], units: list[Unit]) -> dict[str, dict]:
    """The rows of `done` whose key is one of `units`' (an output folder may hold other manifests'
    units), in `done`'s order. One set of keys, built once: linear in both."""
    keys = {u.key for u in units}
    return {k: v for k, v in done.items() if k in keys}


_MEMO_SIZE = 1 << 16


def _compact(row: dict[str, Any] | None, memo: dict[Any, Any]) -> dict[str, Any] | None:
    """`row` holding one copy of each column name and of each short value that repeats across rows
    (statuses, prompts, sizes, 0.0 seconds): a million rows from markers took 3.6 kB each, 1.5 kB so.
    `memo` is shared by the rows of one scan, and stops growing at _MEMO_SIZE values (unique ids and
    URLs would fill it for nothing)."""
    if row is None:
        return None
    out = {}
    for k, v in row.items():
        k = sys.intern(k)
        # (-0.0 equals 0.0 but is another value: left alone.)
        if (isinstance(v, str) and len(v) <= 64) or (isinstance(v, float) and math.copysign(1.0, v) > 0):
            v = memo.get(v, v) if len(memo) >= _MEMO_SIZE else memo.setdefault(v, v)
        out[k] = v
    return out


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


def _read_index(url: str, opts: StorageOptions) -> dict[str, tuple[str, bytes]]:
    """OUTPUT/markers-index.parquet: marker name -> (tag, bytes) as the last scan read them; empty when
    there is none or it cannot be read (then every marker is read, and the index written again)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(url, opts)))
        cols = [table.column(c).to_pylist() for c in ("name", "tag", "blob")]
    except FileNotFoundError:
        return {}
    except Exception as e:  # noqa: BLE001 - a damaged index only costs a full scan
        log.warning("%s could not be read (%s): every marker is read", storage.redact_url(url), type(e).__name__)
        return {}
    return {n: (t, b) for n, t, b in zip(*cols, strict=True)}


def _write_index(url: str, tags: dict[str, str | None], blobs: dict[str, bytes], opts: StorageOptions) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [n for n in blobs if tags.get(n)]
    table = pa.table(
        {
            "name": pa.array(names, pa.string()),
            "tag": pa.array([tags[n] for n in names], pa.string()),
            "blob": pa.array([blobs[n] for n in names], pa.binary()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    try:
        storage.write_bytes(url, buf.getvalue(), opts)  # one PUT: a reader sees the old index or the new
    except Exception as e:  # noqa: BLE001 - the index only saves the next scan's reads
        log.warning("%s could not be written (%s)", storage.redact_url(url), type(e).__name__)


def _read_markers(folder: str, tags: dict[str, str | None], opts: StorageOptions, index_url: str) -> dict[str, bytes]:
    """The bytes of the markers `tags` names in `folder`, by name; one that vanished since the listing
    is left out. Local files are read directly (fsspec's per-file overhead was most of a rerun's scan).
    On an object store, a marker whose tag the index at `index_url` holds is taken from the index; the
    others are read concurrently through one filesystem, and the index is rewritten when there were any."""
    if not tags:
        return {}
    names = list(tags)
    fs, path = storage.filesystem(folder, opts)
    if storage.is_local(folder):
        out = {}
        for name in names:
            try:
                with open(os.path.join(path, name), "rb") as f:
                    out[name] = f.read()
            except FileNotFoundError:
                pass
        return out
    index = _read_index(index_url, opts) if any(tags.values()) else {}
    known = {n: index[n][1] for n, tag in tags.items() if tag and n in index and index[n][0] == tag}
    paths = {f"{path.rstrip('/')}/{name}": name for name in names if name not in known}
    read = fs.cat(list(paths), on_error="omit") if paths else {}
    blobs = {**known, **{paths[p]: blob for p, blob in read.items() if p in paths}}
    if read and any(tags.values()):
        _write_index(index_url, tags, blobs, opts)
    return blobs


def pending(units: list[Unit], done: dict[str, dict]) -> list[Unit]:
    """The units still to do, in manifest order."""
    return [u for u in units if u.key not in done]


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
