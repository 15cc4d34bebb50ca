"""The manifest: which videos, which prompts, which labels to carry through.

A manifest is a parquet, CSV or JSONL table at any fsspec URL with a `video` column (URL of a clip)
and a `prompt` column (a string, or a list of strings), optionally `id`, `source_prompt` and any
other columns (labels, carried to the results). A folder or glob of videos plus `--prompt` texts
works too. The manifest is expanded into units, one per (video, prompt): the unit is what gets an
output file, a completion marker and a results row.

Names on storage are derived here and only here, so that no id or prompt can reach outside the
output prefix: every name is `[A-Za-z0-9._-]`, never starts with a dot, and carries a hash whenever
the text had to be changed to fit.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pipeline.errors import Failure, InputError, first_line
from pipeline.io.formats import VIDEO_EXTENSIONS as _VIDEO_EXTENSIONS
from pipeline.io.shots import check_shots

from . import storage
from .storage import StorageOptions
from .tables import RESULTS, check_labels

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = tuple(sorted(_VIDEO_EXTENSIONS))  # pipeline.io.video's list, as str.endswith takes it
TABLE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
TABLE_FORMATS |= {".jsonl": "json", ".ndjson": "json", ".json": "json"}
RESERVED = ("video", "prompt", "id", "source_prompt", "shots", "mask")

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
# Names Windows keeps for devices, in any case and with any extension (`con`, `Aux.v2`): a folder or
# file of that name cannot be made there, so such a name gets a hash like any other changed text.
_DEVICE_NAMES = frozenset(["con", "prn", "aux", "nul", *(f"{p}{n}" for p in ("com", "lpt") for n in range(1, 10))])
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def slug(text: str, max_len: int = 40) -> str:
    """Lower-case letters, digits and single dashes; '' when nothing is left."""
    s = _UNSAFE_CHARS.sub("-", text.lower()).replace(".", "-").strip("-_")
    s = re.sub(r"-{2,}", "-", s)
    return s[:max_len].strip("-_")


def safe_name(text: str) -> str:
    """A file name for `text` that cannot escape its folder and that no other text shares, even on a
    case-insensitive file system (macOS, Windows): itself when already safe and lower-case, else a
    lower-case slug of it plus a hash of the original (`Clip` -> `clip-<hash>`, while `clip` stays `clip`).
    A name Windows reserves for a device (`con`, `nul.v2`, `LPT1`) or one ending in a dot (Windows drops
    it) gets the hash too."""
    reserved = text.split(".", 1)[0].lower() in _DEVICE_NAMES or text.endswith(".")
    if _SAFE.match(text) and ".." not in text and text == text.lower() and not reserved:
        return text
    return f"{slug(text) or 'x'}-{short_hash(text)}"


def derive_id(video: str) -> str:
    """A stable id for a video URL: its file stem, plus a hash of the whole URL as written."""
    path = video
    if "://" in video:  # the stem of the URL's path: never its query (a presigned URL's signature)
        try:
            path = urlsplit(video).path or video
        except ValueError:
            path = video.split("?", 1)[0]
    stem = posixpath.basename(path.rstrip("/"))
    for ext in VIDEO_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    # The hash is of the URL as shown (credentials redacted): the same id when a presigned URL is
    # signed again, and no hash of a password in a file name. URLs without credentials are unchanged.
    return f"{slug(stem) or 'video'}-{short_hash(storage.redact_url(video))}"


def unit_key(name: str, prompt: str, inputs: str = "") -> str:
    """File name stem of the (video, prompt) unit: the video's safe name, a readable slug of the
    prompt, and a hash of the prompt (the slug alone is lossy). `inputs`: what else the clip's row
    gives that changes the pixels (`edit_inputs`: a mask, given shots), so that another mask or other
    shots make another output rather than count as done; empty for a plain row (names as before)."""
    return f"{name}__{slug(prompt, 32) or 'prompt'}-{short_hash(prompt + inputs)}"


def edit_inputs(shots: tuple[int, ...] | None, mask: str | None) -> str:
    """The `inputs` of `unit_key` for a row's given shots and mask ('' when it gives neither)."""
    parts = ([f"shots={list(shots)}"] if shots is not None else []) + ([f"mask={mask}"] if mask else [])
    return "".join(f"\x00{p}" for p in parts)


@dataclass(frozen=True, slots=True)  # slots: a million units in the driver, ~100 bytes less each
class Unit:
    """One (video, prompt): one output, one marker, one results row."""

    id: str  # the id as given in the manifest (or derived); a label, not a file name
    name: str  # safe_name(id): what the files are called
    video: str  # resolved URL of the clip
    prompt: str  # prompt text or template (`{caption}` is filled in after precompute)
    source_prompt: str | None
    row: int  # manifest row, for the carried columns
    key: str  # unit_key(name, prompt, edit_inputs(shots, mask))
    shots: tuple[int, ...] | None = None  # the manifest's `shots` (first frames); None: --shots decides
    mask: str | None = None  # resolved URL of the manifest's `mask` (a masked edit); None: no mask


@dataclass(slots=True)  # slots: one per pending video in the driver, half a million in a large rerun
class VideoJob:
    """One video with all its pending units; it is precomputed once and edited on one actor."""

    id: str
    name: str
    video: str
    source_prompt: str | None
    units: list[Unit] = field(default_factory=list)
    attempts: int = 0
    shots: tuple[int, ...] | None = None  # as on its units (rows of one id agree)
    mask: str | None = None


@dataclass
class Manifest:
    units: list[Unit]
    carried: pa.Table  # manifest columns other than RESERVED, one row per manifest row
    source: str

    def videos(self, units: list[Unit] | None = None) -> list[VideoJob]:
        """Group `units` (default: all) by video, in manifest order."""
        jobs: dict[str, VideoJob] = {}
        for u in self.units if units is None else units:
            job = jobs.get(u.name)
            if job is None:
                job = jobs[u.name] = VideoJob(u.id, u.name, u.video, u.source_prompt, shots=u.shots, mask=u.mask)
            job.units.append(u)
        return list(jobs.values())

    def carried_rows(self, rows: list[int] | pa.Array) -> pa.Table:
        if not self.carried.num_columns:
            return self.carried
        return self.carried.take(rows if isinstance(rows, pa.Array) else pa.array(rows, type=pa.int64()))

    def keys(self) -> pa.Array:
        """The units' keys, in order, as one Arrow array (what the driver's columnar steps match rows by)."""
        return self._columns()[0]

    def rows(self) -> pa.Array:
        """The units' manifest rows, in order (int64)."""
        return self._columns()[1]

    def _columns(self) -> tuple[pa.Array, pa.Array]:
        # Kept while `units` is the same list of the same length (tests and augment assign a new one).
        cached = self.__dict__.get("_cached")
        if cached is None or cached[0] is not self.units or cached[1] != len(self.units):
            keys = pa.array([u.key for u in self.units], pa.string())
            rows = pa.array([u.row for u in self.units], pa.int64())
            cached = self.__dict__["_cached"] = (self.units, len(self.units), keys, rows)
        return cached[2], cached[3]


def url_path(url: str) -> str:
    """The path part of `url`, without its query or fragment (`?token=...`, `?versionId=...`): what its
    file name and extension are read from. A local path is itself (a `?` there is part of the name)."""
    if "://" not in url:
        return url
    try:
        return urlsplit(url).path
    except ValueError:  # e.g. an unbalanced [ in the host
        return url.split("?", 1)[0].split("#", 1)[0]


def _table_format(url: str) -> tuple[str, str | None]:
    low = url_path(url).lower().rstrip("/")
    compression = None
    for ext in (".gz", ".bz2", ".zst", ".xz"):
        if low.endswith(ext):
            compression, low = ext, low[: -len(ext)]
    for ext, fmt in TABLE_FORMATS.items():
        if low.endswith(ext):
            return fmt, compression
    raise InputError(f"manifest {url}: unknown table format; use .parquet, .csv or .jsonl (or a folder of videos)")


def _chain(e: BaseException) -> list[BaseException]:
    """`e` and the exceptions it was raised from or during (fsspec wraps the one that says why)."""
    out: list[BaseException] = []
    while e is not None and e not in out and len(out) < 10:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


_UNKNOWN_OPTION = re.compile(r"unexpected keyword argument '([^']+)'")


def storage_error(e: BaseException, what: str) -> InputError | Failure | None:
    """One line for a storage call that failed for a reason the user can act on, or None (then the
    caller says what it says for its own kind of error): a storage option the filesystem does not take
    (a mistyped --storage-option, exit 2) and an endpoint or host that cannot be reached (exit 1).
    `what` names the input, e.g. "manifest s3://b/m.csv"."""
    chain = _chain(e)
    for c in chain:
        m = _UNKNOWN_OPTION.search(str(c)) if isinstance(c, TypeError) else None
        if m:
            return InputError(
                f"{what}: storage option {m.group(1)!r} is not one this filesystem takes; "
                "check --storage-option (see the fsspec docs of the protocol for its options)"
            )
    for c in chain:
        name = type(c).__name__
        # botocore's EndpointConnectionError, aiohttp's ClientConnectorError, ConnectionRefusedError, ...
        if isinstance(c, ConnectionError) or ("Connect" in name and "Error" in name) or name == "ConnectTimeoutError":
            return Failure(
                f"{what}: cannot connect ({first_line(c, 160)}); check the URL, --endpoint-url and the network"
            )
    return None


def _read_table(url: str, opts: StorageOptions) -> pa.Table:
    fmt, compression = _table_format(url)
    fs, path = storage.filesystem(url, opts)
    try:
        with fs.open(path, "rb", compression="infer" if compression else None) as f:
            data = f.read()
    except Exception as e:
        found = storage_error(e, f"manifest {url}")
        if found is not None:
            raise found from None
        if isinstance(e, IsADirectoryError):
            raise InputError(f"manifest {url}: is a folder named like a table; give the table's file") from None
        if isinstance(e, FileNotFoundError):
            raise InputError(f"manifest {url}: no such file; check the URL") from None
        if isinstance(e, OSError):  # no permission, a loop of links, ...
            raise InputError(f"manifest {url}: cannot be read ({e.strerror or first_line(e, 120)})") from None
        raise
    try:
        if fmt == "parquet":
            return pq.read_table(io.BytesIO(data))
        if fmt in ("csv", "tsv"):
            parse = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",")
            # Strings stay strings: an id like "007" must not become the number 7.
            convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in RESERVED}, strings_can_be_null=True)
            # One thread: a manifest is small, and no Arrow thread is left running when a usage error
            # ends the process right after (see jobs/cli.py, _quiet_libraries, on exit status 134).
            read = pcsv.ReadOptions(use_threads=False)
            return pcsv.read_csv(io.BytesIO(data), read_options=read, parse_options=parse, convert_options=convert)
        return _read_jsonl(data, url)
    except pa.ArrowInvalid as e:
        first = str(e).splitlines()[0]
        raise InputError(f"manifest {url}: cannot be read as {fmt}: {first}") from None


def _read_jsonl(data: bytes, url: str) -> pa.Table:
    """JSON lines (or one JSON array of objects). Parsed by Python rather than pyarrow so that a
    `prompt` may be a string on one line and a list on the next."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"manifest {url}: not UTF-8 text (byte {e.start}); save it as UTF-8 JSON lines") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"manifest {url}: not a valid JSON array ({e.msg}, line {e.lineno})") from None
        if not isinstance(records, list):
            records = [records]
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"manifest {url} line {n}: not valid JSON ({e.msg})") from None
    if not records:
        raise InputError(f"manifest {url}: is empty; write one JSON object per line, each with a 'video' key")
    for n, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise InputError(
                f"manifest {url} row {n}: expected a JSON object with a 'video' key, got {type(r).__name__} {r!r:.60}"
            )
    for n, r in enumerate(records, 1):  # the row-wise checks of load_manifest, before columns are typed
        _video_of(r.get("video"), f"manifest {url} row {n}")
        _prompts_of(r.get("prompt"), f"manifest {url} row {n}")
        if isinstance(r.get("prompt"), str):
            r["prompt"] = [r["prompt"]]
        for k in ("id", "source_prompt", "mask"):
            if r.get(k) is not None and not isinstance(r[k], dict | list):
                r[k] = str(r[k])
        if r.get("shots") is not None:  # checked here, so that a bad list names its row
            r["shots"] = list(_shots_of(r["shots"], f"manifest {url} row {n}") or [])
    return _table_of(records, url)


def _table_of(records: list[dict[str, Any]], url: str) -> pa.Table:
    """A table from JSON records, one column at a time, so that a column whose rows hold values of
    different types (a number in one row, a string in the next) is named, with the first odd row."""
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            kinds = [_kind(v) for v in values]
            first = next(k for k in kinds if k != "null")
            row = next((n for n, k in enumerate(kinds, 1) if k not in ("null", first)), None)
            if row is None:  # same kind everywhere, e.g. lists or objects of different shapes
                raise InputError(
                    f"manifest {url}: column {name!r} cannot be stored as one typed column "
                    f"({str(e).splitlines()[0][:120]}); give every row values of the same shape"
                ) from None
            raise InputError(
                f"manifest {url} row {row}: column {name!r} holds {kinds[row - 1]} {values[row - 1]!r:.60} where "
                f"earlier rows hold {first}; use one type per column (e.g. quote numbers as strings)"
            ) from None
    return pa.table(columns)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _is_glob(url: str) -> bool:
    return any(c in url for c in "*?[")


def _list_videos(url: str, opts: StorageOptions, output: str | None = None) -> list[str]:
    """The videos of a folder or glob, sorted; none under `output` (a run's own mp4s are not input)."""
    fs, path = storage.filesystem(url, opts)
    if _is_glob(url):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.find(path)
    else:
        return []
    videos = sorted(p for p in found if p.lower().endswith(VIDEO_EXTENSIONS) and not _hidden(p))
    local = storage.is_local(url)
    videos = [p if local else fs.unstrip_protocol(p) for p in videos]
    if output is not None:
        inside = [v for v in videos if storage.is_under(v, output)]
        if inside:
            log.warning(
                "manifest %s: %d video(s) under the output folder %s are not input (a run's own outputs)",
                storage.redact_url(url),
                len(inside),
                storage.redact_url(output),
            )
            videos = [v for v in videos if v not in set(inside)]
    return videos


def _hidden(path: str) -> bool:
    return posixpath.basename(path).startswith(".")


def _resolve(video: str, base: str) -> str:
    """Videos given relative to the manifest's folder (portable manifests); URLs unchanged."""
    if "://" in video or video.startswith("/"):
        return storage.normalize(video)
    return storage.normalize(storage.join(base, video))


def _video_of(value: Any, where: str) -> str:
    """A row's 'video' value: a non-empty string, else one line naming the row and the column."""
    if value is not None and not isinstance(value, str):
        raise InputError(
            f"{where}: column 'video' must hold the path or URL of a clip (a string), "
            f"got {type(value).__name__} {value!r:.60}"
        )
    if value is None or not value.strip():
        raise InputError(f"{where}: column 'video' is empty; give the path or URL of a clip")
    return value


def _prompts_of(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        # A list written into a CSV cell as JSON: `[...]`, or at least `["...` (an unterminated list is
        # a mistake to point out, not a prompt to edit). A prompt like `[vintage] a car` stays text.
        if text.startswith("[") and (text.endswith("]") or text[1:].lstrip().startswith('"')):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(
                    f"{where}: column 'prompt' holds {text!r:.60}, which looks like a JSON list but is not "
                    f'valid JSON ({e.msg}); write a list as ["a prompt", "another"], or a single prompt '
                    f'that starts with "[" as a one-item list'
                ) from None
        else:
            return [check_text(value, f"{where}: column 'prompt'")] if text else []
    if isinstance(value, list | tuple):
        out = []
        for p in value:
            if not isinstance(p, str):
                raise InputError(f"{where}: column 'prompt' holds a list with {type(p).__name__} {p!r}; use strings")
            if p.strip():
                out.append(check_text(p, f"{where}: column 'prompt'"))
        return out
    raise InputError(
        f"{where}: column 'prompt' must hold a string or a list of strings, got {type(value).__name__} {value!r:.60}"
    )


def _shots_of(value: Any, where: str) -> tuple[int, ...] | None:
    """A row's `shots`: None when empty, else the first frames (a list; in CSV a JSON list in the cell).
    Its shape (a list of whole numbers) is checked here: another shape refuses the run. Its values
    (increasing, within the clip) are checked once the clip is decoded (precompute): a list that is not
    increasing, or starts before 0, fails that clip's rows only, as one past the clip's end does."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(f"{where}: column 'shots' holds {value!r:.60}; write a JSON list like [0, 48]") from None
    try:
        return tuple(check_shots(value, 2**62, f"{where}: column 'shots'"))
    except InputError:
        # Whole numbers in the wrong order: the clip's precompute fails it (check_shots again, there).
        if isinstance(value, list | tuple) and value and all(_whole(v) for v in value):
            return tuple(int(v) for v in value)
        raise


def _whole(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value == int(value)
    )


def check_text(text: str, where: str) -> str:
    """`text` when it is text that can be written (UTF-8); else one line naming `where`. A prompt from
    argv with bytes that are not UTF-8 (Python keeps them as lone surrogates), or a JSON string with a
    lone surrogate (`"\\ud800"`), cannot be hashed into a file name, written to a table or tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"{where}: not UTF-8 text (character {e.start + 1} is {text[e.start]!a}); give it as UTF-8"
        ) from None
    return text


def _why_no_videos(url: str, low: str) -> str:
    """Why a manifest that is not a table gave no videos, as the end of one line."""
    if storage.is_local(url) and not _is_glob(url):
        path = storage.normalize(url)
        if os.path.islink(path) and not os.path.exists(path):
            return "is a link that leads nowhere (or to itself); give a table or a folder of videos"
        if not os.path.lexists(path):
            kind = "" if low.endswith(VIDEO_EXTENSIONS) or "." not in posixpath.basename(low) else ", and not a table"
            return f"no such file or folder{kind}; check the path (a manifest is a .parquet, .csv or .jsonl table)"
    if low.endswith(VIDEO_EXTENSIONS):
        return (
            "is a video, not a manifest; give a table (.parquet, .csv, .jsonl) with a 'video' column, "
            "or a folder or glob of videos"
        )
    return "not a table (.parquet, .csv, .jsonl) and no videos found there; check the URL"


def _mask_of(value: Any, where: str, base: str) -> str | None:
    """A row's `mask`: None when empty, else its URL (relative paths are relative to the manifest)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: column 'mask' must hold the URL of a mask folder or video, got {value!r:.60}")
    return _resolve(value.strip(), base) if base else storage.normalize(value.strip())


_LOAD_SLICE = 1 << 16  # manifest rows turned into Python values at a time


def _shown(u: Unit) -> tuple:
    """What must agree between rows of one id. The same file under two signatures of a presigned URL
    is one video."""
    return (storage.redact_url(u.video), u.source_prompt, u.shots, storage.redact_url(u.mask) if u.mask else None)


def _add_units(
    cols: dict[str, list[Any]],
    j: int,
    row: int,
    url: str,
    base: str,
    extra: list[str],
    require_prompts: bool,
    use_manifest_prompts: bool,
    texts: dict[str, str],
    first_unit: dict[str, Unit],
    seen_unit: set[str],
    units: list[Unit],
) -> None:
    """The units of manifest row `row` (`j` in the slice `cols`), appended to `units`."""
    where = f"manifest {url} row {row + 1}"
    raw_video = _video_of(cols["video"][j], where)
    video = _resolve(raw_video.strip(), base) if base else storage.normalize(raw_video.strip())
    raw_id = cols["id"][j]
    vid = check_text(str(raw_id), f"{where}: column 'id'") if raw_id not in (None, "") else None
    vid = vid or derive_id(check_text(raw_video.strip(), f"{where}: column 'video'"))
    name = safe_name(vid)
    src = cols["source_prompt"][j]
    src = check_text(str(src), f"{where}: column 'source_prompt'") if src not in (None, "") else None
    shots = _shots_of(cols["shots"][j], where)
    mask = _mask_of(cols["mask"][j], where, base)
    src = texts.setdefault(src, src) if src is not None else None
    first = first_unit.get(name)
    if first is not None and _shown(first) != _shown(Unit(vid, name, video, "", src, row, "", shots, mask)):
        raise InputError(f"{where}: id {vid!r} is already used for another video, source_prompt, shots or mask")
    inputs = edit_inputs(shots, storage.redact_url(mask) if mask else None)
    row_prompts = _prompts_of(cols["prompt"][j], where) if use_manifest_prompts else []
    all_prompts = list(dict.fromkeys(row_prompts + extra))
    if not all_prompts:
        if require_prompts:
            raise InputError(f"{where}: no prompt; add a 'prompt' column or pass --prompt TEXT")
        all_prompts = [""]
    for prompt in all_prompts:
        prompt = texts.setdefault(prompt, prompt)
        key = unit_key(name, prompt, inputs)
        if key in seen_unit:
            raise InputError(f"{where}: video {vid!r} with prompt {prompt!r} is listed twice")
        seen_unit.add(key)
        units.append(Unit(vid, name, video, prompt, src, row, key, shots=shots, mask=mask))
    first_unit.setdefault(name, units[-1])


def load_manifest(
    url: str,
    opts: StorageOptions,
    *,
    prompts: list[str] | None = None,
    require_prompts: bool = True,
    use_manifest_prompts: bool = True,
    tables: tuple[str, ...] = (RESULTS,),
    output: str | None = None,
) -> Manifest:
    """Read a manifest table, or list a folder/glob of videos, and expand it into units.

    `prompts` (from `--prompt`) apply to every video, after the manifest's own prompts.
    With `require_prompts=False` (relabel) a video gets one unit with the empty prompt;
    `use_manifest_prompts=False` (augment) ignores the manifest's `prompt` column.
    `tables`: the tables the labels will be joined to (pipeline.dataset.tables); a label named like one of
    their own columns is a usage error here, before any work.
    `output`: the run's output folder; a folder or glob of videos never lists what is under it (an
    output inside the input folder would otherwise be edited again by every rerun).
    """
    extra = [p for p in (prompts or []) if p.strip()]
    for p in extra:
        check_text(p, "--prompt")
    low = url_path(url).lower().rstrip("/")  # a presigned URL's query is not its extension
    compressions = ("", ".gz", ".bz2", ".zst", ".xz")
    is_table = any(low.removesuffix(c).endswith(tuple(TABLE_FORMATS)) for c in compressions if low.endswith(c))
    if is_table:
        table = _read_table(url, opts)
        # Relative videos are relative to the table's folder: its URL without the query (a signature
        # is for the table only, and may hold slashes).
        folder = url
        if "://" in url:
            parts = urlsplit(url)
            folder = f"{parts.scheme}://{parts.netloc}{parts.path}"
        base = posixpath.dirname(storage.normalize(folder))
    else:
        try:
            videos = _list_videos(url, opts, output)
        except (InputError, Failure):
            raise
        except Exception as e:
            found = storage_error(e, f"manifest {url}")
            if found is None:
                raise
            raise found from None
        if not videos:
            raise InputError(f"manifest {url}: {_why_no_videos(url, low)}")
        table = pa.table({"video": pa.array(videos, pa.string())})
        base = ""
    twice = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if twice:
        raise InputError(
            f"manifest {url}: column(s) {', '.join(map(repr, twice))} appear more than once; "
            "give every column its own name"
        )
    if "video" not in table.column_names:
        has = ", ".join(repr(c) for c in table.column_names) if table.column_names else "no columns"
        raise InputError(f"manifest {url}: needs a 'video' column (path or URL of each clip); it has {has}")
    carried_names = [c for c in table.column_names if c not in RESERVED]
    check_labels(carried_names, tables, f"manifest {url}")
    carried = table.select(carried_names)
    units: list[Unit] = []
    texts: dict[str, str] = {}  # one copy of each prompt and source prompt: they repeat across rows
    first_unit: dict[str, Unit] = {}  # the first unit of each id: its video, source_prompt, shots and mask
    seen_unit: set[str] = set()
    present = [c for c in RESERVED if c in table.column_names]
    # The reserved columns as Python lists one slice at a time: whole columns of a million rows were
    # hundreds of MB of strings alive at once (the peak of a large manifest's load).
    for start in range(0, table.num_rows, _LOAD_SLICE):
        part = table.slice(start, _LOAD_SLICE)
        cols = {c: part.column(c).to_pylist() for c in present}
        nulls = [None] * part.num_rows
        for c in RESERVED:
            cols.setdefault(c, nulls)
        for j in range(part.num_rows):
            _add_units(
                cols,
                j,
                start + j,
                url,
                base,
                extra,
                require_prompts,
                use_manifest_prompts,
                texts,
                first_unit,
                seen_unit,
                units,
            )
    if not units:
        raise InputError(f"manifest {url}: has no rows; add one row per video (a 'video' column and a 'prompt')")
    return Manifest(units=units, carried=carried, source=url)
