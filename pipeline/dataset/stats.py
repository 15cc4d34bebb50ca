"""OUTPUT/stats.json: one run's figures in a file a pipeline can read (no Ray here).

    {"run": "<tag of its live metrics>", "interrupted": false, "settings": "<fingerprint>",
     "units": {"total", "done_before", "in_table"},
     "by_status": {"ok": 40, "failed": 2}, "failures": {"no such file": 1, "InvalidDataError": 1},
     "frames": {"ok_outputs", "edited_this_run"}, "seconds": {"run", "by_stage": {"decode", ...}},
     "throughput": {"frames_per_second", "units_per_hour"}, "editors": {...},
     "versions": {"pix2video", "python", "torch", "diffusers", "transformers", "ray"}, "devices": {...}}

Counts come from the results table as written (so they describe what a reader of results.parquet
finds); `seconds.by_stage` are the table's column sums (a video's once-only stages are charged to its
first row), i.e. what making the table's outputs took, runs before this one included; `seconds.run`,
`frames.edited_this_run` and `throughput` are this run's. Written atomically (temporary then rename;
one PUT on object stores) at the end of every run, an interrupted one included.
"""

from __future__ import annotations

import collections
import datetime
import json
import platform
import re
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .storage import StorageOptions
from .tables import FAILED, RESULTS, RESULTS_SCHEMA, read_table

STATS = "stats.json"
PACKAGES = ("pix2video", "torch", "diffusers", "transformers", "ray")
STAGES = tuple(name.removeprefix("seconds_") for name in RESULTS_SCHEMA.names if name.startswith("seconds_"))

# "<url or path>: what happened": the clip's name leads many errors and is no part of their kind.
_LEADING_NAME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://.*?|/.*?|[^:\s]+\.[A-Za-z0-9]{2,5}):\s+(?P<rest>.*)$", re.S)
_EXCEPTION = re.compile(r"^(?P<name>[A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt|Failure|Died)):")


def error_kind(error: str | None) -> str:
    """What kind of failure an error text is, so that a thousand missing files are one line: the
    exception's name when it leads the text (`InvalidDataError`), else the text without the clip's
    URL, numbers as N and quoted values as '…', up to its first ';' (`video has N frames, more than
    --max-frames N`)."""
    text = (error or "").strip()
    if not text:
        return "unknown"
    match = _LEADING_NAME.match(text)
    if match:
        text = match.group("rest").strip()
    match = _EXCEPTION.match(text)
    if match:
        return match.group("name")
    text = text.split(";", 1)[0]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\d+(?:\.\d+)?", "N", text)
    text = re.sub(r"\s+", " ", text).strip(" .:")
    return text[:80] or "unknown"


def package_versions() -> dict[str, str | None]:
    """The versions that change an output's pixels or a run's behaviour (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _sum(table: pa.Table, name: str) -> float:
    """The sum of a column (nulls as 0; 0.0 where there is no such column)."""
    return float(pc.sum(table.column(name)).as_py() or 0.0) if name in table.column_names else 0.0


def run_stats(
    table: pa.Table,
    *,
    total: int,
    settings: str,
    seconds: float,
    frames: int,
    done_before: int,
    interrupted: bool = False,
    editors: Mapping[str, Any] | None = None,
    devices: Mapping[str, Any] | None = None,
    versions: Mapping[str, str | None] | None = None,
    output: str | None = None,
    run: str | None = None,
    models: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The stats of a run whose results table is `table` (see the module's docstring). `total`: the
    manifest's units; `frames`, `seconds`: edited by this run, and its wall time; `run`: the tag its
    live metrics carry."""
    # Counted with Arrow, and only failed rows' errors as Python strings: a million-row table's columns
    # as lists were the driver's last peak of memory.
    status = table.column("status") if "status" in table.column_names else pa.nulls(table.num_rows, pa.string())
    counts = collections.Counter({c["values"]: c["counts"] for c in status.value_counts().to_pylist()})
    failures: collections.Counter[str] = collections.Counter()
    if "error" in table.column_names:  # each distinct error once, in the order rows first give it
        errors = pc.filter(table.column("error"), pc.fill_null(pc.equal(status, FAILED), False))
        for c in errors.value_counts().to_pylist():
            failures[error_kind(c["values"])] += c["counts"]
    elif counts.get(FAILED):
        failures[error_kind(None)] += counts[FAILED]
    ok = pc.fill_null(pc.equal(status, "ok"), False)
    frames_ok = pc.filter(table.column("num_frames"), ok) if "num_frames" in table.column_names else pa.array([])
    ok_frames = int(pc.sum(frames_ok).as_py() or 0)
    by_stage = {stage: round(_sum(table, f"seconds_{stage}"), 3) for stage in STAGES}
    units_now = max(table.num_rows - done_before, 0)
    return {
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "output": storage.redact_url(output) if output else None,
        "run": run,
        "interrupted": interrupted,
        "settings": settings,
        "models": dict(models or {}),
        "units": {"total": total, "done_before": done_before, "in_table": table.num_rows},
        "by_status": dict(sorted(counts.items())),
        "failures": dict(failures.most_common()),
        "frames": {"ok_outputs": ok_frames, "edited_this_run": frames},
        "seconds": {"run": round(seconds, 3), "by_stage": by_stage},
        "throughput": {
            "frames_per_second": round(frames / seconds, 4) if seconds > 0 else None,
            "units_per_hour": round(units_now * 3600 / seconds, 2) if seconds > 0 else None,
        },
        "editors": dict(editors or {}),
        "devices": dict(devices or {}),
        "versions": dict(versions if versions is not None else package_versions()),
    }


def recount(stats: Mapping[str, Any], table: pa.Table) -> dict[str, Any]:
    """`stats` with its counts taken again from `table` (after scoring marked clips 'filtered')."""
    statuses = _column(table, "status")
    errors = _column(table, "error")
    failures = collections.Counter(error_kind(e) for s, e in zip(statuses, errors, strict=True) if s == FAILED)
    return {
        **stats,
        "by_status": dict(sorted(collections.Counter(statuses).items())),
        "failures": dict(failures.most_common()),
    }


def stats_url(output: str) -> str:
    return storage.join(output, STATS)


def write_stats(stats: Mapping[str, Any], output: str, opts: StorageOptions) -> str:
    """OUTPUT/stats.json, replaced whole; its URL."""
    url = stats_url(output)
    storage.write_bytes(url, (json.dumps(stats, indent=2, default=str) + "\n").encode("utf-8"), opts)
    return url


def read_stats(output: str, opts: StorageOptions) -> dict[str, Any] | None:
    """OUTPUT/stats.json, or None when there is none or it cannot be read (an older run's output)."""
    try:
        data = json.loads(storage.read_bytes(stats_url(output), opts))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def refresh(output: str, opts: StorageOptions) -> None:
    """OUTPUT/stats.json recounted from OUTPUT/results.parquet, after scoring marked clips 'filtered'
    (augment's --min-clip-text/--max-pixel-mse); nothing when the run left no stats."""
    current = read_stats(output, opts)
    if current is not None:
        write_stats(recount(current, read_table(storage.join(output, RESULTS), opts)), output, opts)


def display(stats: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """stats.json as the report shows it: 'run' (label, value) lines, 'failures' (kind, count),
    'stages' (stage, seconds), 'versions' (package, version); text, for the page to escape."""

    def fmt(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, list | tuple):
            return ", ".join(map(str, value)) or "–"
        return str(value)

    units, frames = stats.get("units", {}), stats.get("frames", {})
    seconds, throughput = stats.get("seconds", {}), stats.get("throughput", {})
    editors, devices = stats.get("editors", {}), stats.get("devices", {})
    run = [
        ("run", fmt(stats.get("run"))),
        ("written", fmt(stats.get("written")) + (" (interrupted)" if stats.get("interrupted") else "")),
        ("settings", fmt(stats.get("settings"))),
        (
            "videos x prompts",
            f"{fmt(units.get('in_table'))} in the table of {fmt(units.get('total'))}, "
            f"{fmt(units.get('done_before'))} done before this run",
        ),
        ("by status", ", ".join(f"{k} {v}" for k, v in stats.get("by_status", {}).items()) or "–"),
        (
            "frames",
            f"{fmt(frames.get('edited_this_run'))} edited by this run, {fmt(frames.get('ok_outputs'))} in "
            "the ok outputs",
        ),
        ("seconds", fmt(seconds.get("run"))),
        (
            "throughput",
            f"{fmt(throughput.get('frames_per_second'))} frames/s, "
            f"{fmt(throughput.get('units_per_hour'))} videos x prompts per hour",
        ),
        ("editors", ", ".join(f"{k} {fmt(v)}" for k, v in editors.items()) or "–"),
        ("devices", ", ".join(f"{k} {fmt(v)}" for k, v in devices.items()) or "–"),
    ]
    from pipeline.models.names import describe_model

    models = stats.get("models") or {}
    return {
        "run": run,
        # What the pictures come from: the diffusion model and a sentence on it (older stats: none).
        "model": [(models["diffusion"], describe_model(models["diffusion"]))] if models.get("diffusion") else [],
        "failures": [(kind, str(n)) for kind, n in stats.get("failures", {}).items()],
        "stages": [(stage, fmt(v)) for stage, v in seconds.get("by_stage", {}).items()],
        "versions": [(name, fmt(v)) for name, v in stats.get("versions", {}).items()],
    }
