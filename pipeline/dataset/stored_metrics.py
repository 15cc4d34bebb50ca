"""The stored metrics of a run: one record per clip in OUTPUT/metrics/<key>.json (per-frame values and
the means of CLIP-Text, CLIP-Image and Pixel-MSE, of the output and of its input video as the
baseline, with the output's storage stamp, its prompt and the CLIP model), the bounds that mark rows
'filtered', and the summary of a scored results table. No Ray: who computes the records is
`actors.evaluation` (a pool of metric actors) or the editor actors (`run --metrics`).

The storage stamp is fsspec's `ukey` (mtime locally, the ETag on S3): a record is reused until its
output is rewritten, its prompt or the CLIP model changes.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.quality.metrics import Metrics, edit_metrics, mean_metrics, within_bounds
from pipeline.quality.names import METRIC_NAMES

from . import storage
from .results import clip_key
from .storage import StorageOptions
from .tables import FILTERED, INPUT_PREFIX, OK, SCORED

if TYPE_CHECKING:
    import numpy as np

    from pipeline.quality.clip import ClipScorer

METRICS_DIR = "metrics"  # OUTPUT/metrics/<key>.json: per-frame values and the means, edit and input


def metrics_url(output: str, key: str) -> str:
    """Where the stored metrics of clip `key` of the run in `output` live."""
    return storage.join(output, METRICS_DIR, f"{key}.json")


def read_clip_metrics(output: str, key: str, opts: StorageOptions) -> dict[str, Any] | None:
    """The stored metrics of one clip ({'edit': ..., 'input': ..., 'clip_model': ...}) or None."""
    try:
        stored = json.loads(storage.read_bytes(metrics_url(output, key), opts))
    except (FileNotFoundError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def output_stamp(url: str, opts: StorageOptions) -> str:
    """Changes whenever the output is rewritten: fsspec's ukey (mtime-based locally, the ETag on S3)."""
    fs, path = storage.filesystem(url, opts)
    return str(fs.ukey(path))


def read_video(url: str, opts: StorageOptions) -> np.ndarray:
    """uint8 frames of a local or remote video (or local folder of frames)."""
    from pipeline.io.video import read_frames  # when called: tests replace it to catch early reads

    if storage.is_local(url):
        return read_frames(url).frames
    return read_frames(io.BytesIO(storage.read_bytes(url, opts))).frames


def is_fresh(stored: dict[str, Any] | None, clip_model: str, stamp: str, prompt: str) -> bool:
    """Whether a stored record still holds for this output (its stamp), prompt and CLIP model."""
    return stored is not None and (stored.get("clip_model"), stored.get("output_stamp"), stored.get("prompt")) == (
        clip_model,
        stamp,
        prompt,
    )


def score_written(
    output: str,
    key: str,
    row: dict[str, Any],
    frames: np.ndarray,
    input_frames: np.ndarray,
    scorer: ClipScorer,
    opts: StorageOptions,
) -> dict[str, Any]:
    """Score one clip whose output is written (`frames` as stored, `input_frames` the input video's),
    store OUTPUT/metrics/<key>.json and return the stored record."""
    edit, base = edit_metrics(frames, input_frames, row["prompt"], scorer)
    stored = {
        "clip_model": scorer.source,
        "output": row["output"],
        "output_stamp": output_stamp(row["output"], opts),
        "video": row["video"],
        "prompt": row["prompt"],
        "edit": edit.to_dict(),
        "input": base.to_dict(),
    }
    storage.write_bytes(metrics_url(output, key), json.dumps(stored).encode(), opts)
    return stored


def stored_values(stored: dict[str, Any]) -> dict[str, float | None]:
    """The metric columns of a stored record."""
    return {**Metrics.from_dict(stored["edit"]).row(), **Metrics.from_dict(stored["input"]).row(INPUT_PREFIX)}


def apply_bounds(
    table: pa.Table, *, min_clip_text: float | None, max_pixel_mse: float | None
) -> tuple[pa.Table, list[str]]:
    """Mark ok rows outside the bounds as 'filtered' (their outputs stay on disk). Returns the new
    table and the keys of the rows filtered."""
    statuses = table.column("status").to_pylist()
    outputs = table.column("output").to_pylist()
    rows = table.select([c for c in METRIC_NAMES if c in table.column_names]).to_pylist()
    filtered = []
    for i, (status, row) in enumerate(zip(statuses, rows, strict=True)):
        if status == OK and not within_bounds(row, min_clip_text=min_clip_text, max_pixel_mse=max_pixel_mse):
            statuses[i] = FILTERED
            filtered.append(clip_key(outputs[i]))
    index = table.column_names.index("status")
    return table.set_column(index, "status", pa.array(statuses, type=pa.string())), filtered


def summary_rows(table: pa.Table) -> list[tuple[str, dict[str, float | None]]]:
    """[('edits (mean of N)', means), ('input videos (baseline)', means)] over the scored rows."""
    rows = [r for r in table.to_pylist() if r.get("status") in SCORED and r.get("clip_image") is not None]
    return [
        (f"edits (mean of {len(rows)})", mean_metrics(rows)),
        ("input videos (baseline)", mean_metrics(rows, prefix=INPUT_PREFIX)),
    ]
