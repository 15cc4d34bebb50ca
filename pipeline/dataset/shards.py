"""WebDataset tar shards of a dataset verb's table: what video training pipelines read.

    OUTPUT/shards/000000.tar          <key>.mp4 (the clip) + <key>.json (its table row), in table order
    OUTPUT/shards/000000_stats.json   the shard's samples and their versions; written after the tar

A shard holds `shard_size` consecutive samples of the table (the last one fewer), so the names run
without gaps (`shards/{000000..000041}.tar`). Each tar is written whole under a temporary name and
moved into place (one upload on an object store); its `_stats.json` comes after it and is the
shard's completion marker. A rerun keeps every shard whose stats list exactly the samples, at the
same versions, that its place in the table holds now, and writes the others: an interrupted run is
finished, a clip that was redone (other settings, --overwrite) or a row that changed is rewritten
with its shard, and shards past the end of a table that shrank are removed (stats first). A shard's
stats are removed before its tar is replaced, so a run stopped in between leaves it incomplete,
never described by the stats of its old samples.

Keys are the table's ids, which webdataset splits from the extension at the first dot: an id with a
dot gets a dot-free key (with a hash, so keys stay distinct); the row in `<key>.json` keeps the id.
Tars are POSIX pax archives (long names), with fixed owner and times: the same samples give the same
bytes. No Ray here: the verbs call `write_shards` after their run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_path

from . import resume, storage
from .manifest import VideoJob, short_hash
from .storage import StorageOptions

log = logging.getLogger(__name__)

SHARDS = "shards"  # OUTPUT/shards/
FORMATS = ("parquet", "webdataset")
STATS_SUFFIX = "_stats.json"
_READ_AHEAD = 16  # clips read at once (concurrently on object stores): a shard never sits in memory whole


@dataclass(frozen=True)
class Sample:
    """One webdataset sample: `<key>.<ext>` holds the file at `media` (none: the row alone), and
    `<key>.json` the row. `version` identifies what the sample holds now: a shard is rewritten when
    one of its samples' versions changed."""

    key: str
    row: Mapping[str, Any]
    media: str | None
    ext: str
    version: str


@dataclass(frozen=True)
class ShardsWritten:
    folder: str
    shards: int  # shards the table makes
    written: int  # written by this call
    kept: int  # complete before this call, left as they were
    removed: int  # past the end of the table, removed
    samples: int


def check_format(fmt: str, shard_size: int | None) -> None:
    """--format and --shard-size, checked before any work (one line each)."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: unknown format; use one of {', '.join(FORMATS)}")
    if shard_size is not None and fmt != "webdataset":
        raise InputError(f"--shard-size {shard_size}: only --format webdataset writes shards")
    if shard_size is not None and shard_size < 1:
        raise InputError(f"--shard-size {shard_size}: a shard holds at least 1 sample")


def sample_key(key: str) -> str:
    """A webdataset key for a table id: itself without a dot, else its dots as dashes plus a hash."""
    if "." not in key and "/" not in key:
        return key
    return f"{key.replace('.', '-').replace('/', '-')}-{short_hash(key)}"


def _row_json(row: Mapping[str, Any]) -> bytes:
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")


def _version(*parts: bytes) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(hashlib.sha1(p).digest())
    return h.hexdigest()[:16]


def augmented_samples(table: pa.Table, output: str, opts: StorageOptions) -> list[Sample]:
    """augmented.parquet's rows as samples: the new clip's mp4 and its row. A sample's version is
    its row and its completion marker, which a redone clip rewrites (another run's token)."""
    rows = table.to_pylist()
    markers = storage.read_many([resume.marker_url(output, r["id"]) for r in rows], opts)
    out = []
    for r in rows:
        marker = markers.get(resume.marker_url(output, r["id"]), b"")
        out.append(Sample(sample_key(r["id"]), r, r["video"], "mp4", _version(_row_json(r), marker)))
    return out


def labels_samples(table: pa.Table, jobs: Sequence[VideoJob], opts: StorageOptions) -> list[Sample]:
    """labels.parquet's ok rows as samples: the source clip as it was given (its own extension; a
    folder of frames gives the row alone) and its row. `jobs`: the table's videos, row for row (the
    table shows URLs redacted; the job has the readable one). Key: the video's file name (ids may hold
    any text). Version: the row, whose store URLs change with the settings."""
    out = []
    for r, job in zip(table.to_pylist(), jobs, strict=True):
        if r.get("status") != "ok":
            continue
        fs, path = storage.filesystem(job.video, opts)
        media = job.video if fs.isfile(path) else None
        ext = (os.path.splitext(path)[1].lstrip(".").lower() or "mp4") if media else ""
        out.append(Sample(sample_key(job.name), r, media, ext, _version(_row_json(r))))
    return out


def plan(samples: Sequence[Sample], shard_size: int) -> list[list[Sample]]:
    """Consecutive samples, `shard_size` per shard."""
    return [list(samples[i : i + shard_size]) for i in range(0, len(samples), shard_size)]


def shard_name(index: int) -> str:
    return f"{index:06d}"


def _stats(name: str, shard: list[Sample], size: int, seconds: float) -> dict[str, Any]:
    return {
        "shard": f"{name}.tar",
        "count": len(shard),
        "bytes": size,
        "seconds": round(seconds, 3),
        "samples": [[s.key, s.version] for s in shard],
    }


def _is_complete(stats_blob: bytes | None, shard: list[Sample]) -> bool:
    if stats_blob is None:
        return False
    try:
        stats = json.loads(stats_blob)
    except ValueError:
        return False
    return isinstance(stats, dict) and stats.get("samples") == [[s.key, s.version] for s in shard]


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, shard: list[Sample], opts: StorageOptions) -> None:
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for start in range(0, len(shard), _READ_AHEAD):
            chunk = shard[start : start + _READ_AHEAD]
            blobs = storage.read_many([s.media for s in chunk if s.media], opts)
            for s in chunk:
                if s.media:
                    if s.media not in blobs:
                        raise FileNotFoundError(f"{storage.redact_url(s.media)}: gone before it was sharded")
                    _tar_member(tar, f"{s.key}.{s.ext}", blobs[s.media])
                _tar_member(tar, f"{s.key}.json", _row_json(s.row))
        tar.close()
        f.flush()
        os.fsync(f.fileno())


def _put_shard(url: str, shard: list[Sample], opts: StorageOptions) -> int:
    """The tar at `url`, written whole under a temporary name and moved into place; its size."""
    if storage.is_local(url):
        target = storage.filesystem(url, opts)[1]
        with atomic_path(target) as tmp:
            _write_tar(tmp, shard, opts)
            size = tmp.stat().st_size
        return size
    with tempfile.TemporaryDirectory(prefix="pix2video-shard-") as folder:
        tmp = Path(folder) / "shard.tar"
        _write_tar(tmp, shard, opts)
        storage.put_file(str(tmp), url, opts)  # one (multipart) upload: the object appears whole
        return tmp.stat().st_size


def _remove(url: str, opts: StorageOptions) -> None:
    fs, path = storage.filesystem(url, opts)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def write_shards(samples: Sequence[Sample], output: str, opts: StorageOptions, *, shard_size: int) -> ShardsWritten:
    """The shards of `samples` under OUTPUT/shards/, writing only those not complete already."""
    check_format("webdataset", shard_size)
    folder = storage.join(output, SHARDS)
    shards = plan(samples, shard_size)
    storage.remove_stale_temporaries(folder)  # a killed writer's half tar (local folders; none on object stores)
    present = set(storage.list_names(folder, opts))
    stats_urls = {
        i: storage.join(folder, shard_name(i) + STATS_SUFFIX)
        for i in range(len(shards))
        if shard_name(i) + STATS_SUFFIX in present and f"{shard_name(i)}.tar" in present
    }
    blobs = storage.read_many(list(stats_urls.values()), opts)
    written = kept = 0
    for i, shard in enumerate(shards):
        name = shard_name(i)
        if _is_complete(blobs.get(stats_urls.get(i, "")), shard):
            kept += 1
            continue
        stats_url = storage.join(folder, name + STATS_SUFFIX)
        if name + STATS_SUFFIX in present:
            _remove(stats_url, opts)  # the old samples' stats never describe the new tar
        started = time.perf_counter()
        size = _put_shard(storage.join(folder, f"{name}.tar"), shard, opts)
        stats = _stats(name, shard, size, time.perf_counter() - started)
        storage.write_bytes(stats_url, json.dumps(stats, indent=1).encode(), opts)
        written += 1
    removed = _remove_beyond(folder, present, len(shards), opts)
    if written or removed:
        log.info("shards: %d written, %d kept, %d removed under %s", written, kept, removed, storage.redact_url(folder))
    return ShardsWritten(storage.redact_url(folder), len(shards), written, kept, removed, len(samples))


def _remove_beyond(folder: str, present: Iterable[str], count: int, opts: StorageOptions) -> int:
    """Shards numbered `count` and above (the table shrank): stats first, then the tar."""
    indices = set()
    for name in present:
        stem = name.removesuffix(STATS_SUFFIX).removesuffix(".tar")
        if stem != name and stem.isdigit() and len(stem) == 6 and int(stem) >= count:
            indices.add(int(stem))
    for i in sorted(indices):
        _remove(storage.join(folder, shard_name(i) + STATS_SUFFIX), opts)
        _remove(storage.join(folder, f"{shard_name(i)}.tar"), opts)
    return len(indices)
