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

import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.io.atomic import temp_sibling

from . import storage
from .manifest import Unit
from .storage import StorageOptions

log = logging.getLogger(__name__)

MARKERS = "markers"
VIDEOS = "videos"
RUN = "run"  # marker key: the token of the run that wrote it (not a results column)
LOCK = ".pix2video.lock"  # OUTPUT/.pix2video.lock: held by the run writing there (local outputs)


def check_output_location(output: str, flag: str = "--output") -> None:
    """A local output folder that cannot be written (read-only, no permission, under a file) is a
    usage error before any work, not a traceback after every video failed. Probes with a temporary
    file where the folder is, or would be created, removed at once. Object stores are not probed.
    `flag`: the option the error names (--output, --precompute-store)."""
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

    Two listings (markers, videos) instead of one existence check per unit. Unreadable markers are
    not done; they are reported in one warning.
    """
    folder = storage.join(output, MARKERS)
    names = [n for n in storage.list_names(folder, opts) if n.endswith(".json") and not n.startswith(".")]
    blobs = storage.read_many([storage.join(folder, n) for n in names], opts)
    videos = set(storage.list_names(storage.join(output, VIDEOS), opts)) if blobs else set()
    done: dict[str, dict] = {}
    stale = 0
    unreadable: list[str] = []
    missing: list[str] = []
    for url, blob in sorted(blobs.items()):
        key = url.rsplit("/", 1)[-1].removesuffix(".json")
        row = _parse(blob)
        if row is not None:
            row.pop(RUN, None)
        if row is None:
            unreadable.append(key)
        elif row.pop("settings", None) != settings:
            stale += 1
        elif output_url(output, key).rsplit("/", 1)[-1] not in videos:
            missing.append(key)
        else:
            done[key] = row
    if unreadable:
        folder = storage.join(output, MARKERS)
        _warn_once(unreadable, "completion marker(s) could not be read", folder, "those units will be redone")
    if missing:
        _warn_once(missing, "finished output(s) are gone", storage.join(output, VIDEOS), "they will be made again")
    return done, stale


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
