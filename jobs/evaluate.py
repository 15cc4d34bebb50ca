"""Score a finished run with the paper's metrics; adds columns to OUTPUT/results.parquet.

    pix2video evaluate OUTPUT                       # OUTPUT of `pix2video run` / `augment` (local or s3://)
    pix2video evaluate OUTPUT --clip-model tiny     # offline test: tiny random CLIP, meaningless values

For every clip with status ok (or filtered): CLIP-Text (output frames vs. the target prompt, higher is
better), CLIP-Image (consecutive output frames, higher is better) and Pixel-MSE (output frame t warped to
t+1 with the INPUT video's optical flow, 0-255 scale, lower is better); see pipeline/metrics.py. The same
three on the input video are the baseline (columns input_clip_text, input_clip_image, input_pixel_mse).

Per-frame values go to OUTPUT/metrics/<clip>.json (also what `pix2video report` plots); a rerun
reuses them unless the output file or the CLIP model changed (--overwrite recomputes everything).
Metric values from the tiny CLIP (--clip-model tiny) are meaningless except as a test.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs import _common
from pipeline.errors import InputError
from pipeline.quality.clip import CLIP_MODEL_HELP, DEFAULT_CLIP_MODEL
from pipeline.quality.metrics import METRIC_NAMES, Metrics

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from actors.storage import StorageOptions
    from pipeline.quality.clip import ClipScorer

log = logging.getLogger(__name__)

METRICS_DIR = "metrics"  # OUTPUT/metrics/<key>.json: per-frame values and the means, edit and input
INPUT_PREFIX = "input_"
COLUMNS = (*METRIC_NAMES, *(INPUT_PREFIX + n for n in METRIC_NAMES))
SCORED = ("ok", "filtered")  # statuses that have an output to score
FILTERED = "filtered"
TINY_NOTE = "note: the tiny CLIP gives meaningless metric values; they only show that the code runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="output folder or URL of a finished run/augment")
    add_clip_arguments(parser, device=True)
    parser.add_argument(
        "--overwrite", action="store_true", help="recompute every clip, even those with up-to-date metrics"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _common.add_storage_arguments(parser)


CLIP_DEFAULT_NOTE = "; default 'tiny' when --model is tiny"


def clip_model(args: argparse.Namespace) -> str:
    """--clip-model, else the tiny CLIP for tiny runs (which are offline tests) and the real one otherwise."""
    from pipeline.models.loading import TINY

    if getattr(args, "clip_model", None):
        return args.clip_model
    return TINY if getattr(args, "model", None) == TINY else DEFAULT_CLIP_MODEL


def add_clip_model_argument(group: Any) -> None:
    group.add_argument("--clip-model", default=None, help=CLIP_MODEL_HELP + CLIP_DEFAULT_NOTE)


def add_clip_arguments(parser: argparse.ArgumentParser, *, device: bool) -> None:
    """--clip-model (and --device/--dtype for verbs that have no model flags of their own)."""
    g = parser.add_argument_group("metrics")
    add_clip_model_argument(g)
    if device:
        g.add_argument("--device", default=None, help="torch device for CLIP (default: cuda if visible, else cpu)")
        g.add_argument(
            "--dtype",
            default="float32",
            choices=("float32", "float16", "bfloat16"),
            help="CLIP's dtype (default float32)",
        )


RUN_METRICS_HELP = (
    "after the run, add columns clip_text, clip_image, pixel_mse (and input_* baselines) to results.parquet"
)
EDIT_METRICS_HELP = "print CLIP-Text, CLIP-Image and Pixel-MSE of the written output, and of the input as the baseline"


def add_metrics_arguments(
    parser: argparse.ArgumentParser, *, filtering: bool = False, metrics_help: str = RUN_METRICS_HELP
) -> None:
    """--metrics and --clip-model (run, augment, edit), and the filter bounds (augment)."""
    g = parser.add_argument_group("quality metrics (see `pix2video evaluate --help`)")
    g.add_argument("--metrics", action="store_true", help=metrics_help)
    add_clip_model_argument(g)
    if filtering:
        g.add_argument(
            "--min-clip-text",
            type=float,
            metavar="X",
            help="mark clips with CLIP-Text below X as 'filtered': kept on disk, left out of augmented.parquet "
            "(implies --metrics)",
        )
        g.add_argument(
            "--max-pixel-mse",
            type=float,
            metavar="Y",
            help="mark clips with Pixel-MSE above Y as 'filtered' (implies --metrics)",
        )


# ------------------------------------------------------------------------------------ the work


@dataclass
class Evaluation:
    """What `evaluate_run` did: the updated table, and how many clips were computed, reused, unreadable."""

    table: pa.Table
    results: str
    computed: int = 0
    reused: int = 0
    unreadable: list[str] = field(default_factory=list)
    clip_model: str = DEFAULT_CLIP_MODEL


def clip_key(output_url: str) -> str:
    """The clip's name: its output's file name without extension (the run's unit key)."""
    base = posixpath.basename(output_url.rstrip("/"))
    return base.rsplit(".", 1)[0] if "." in base else base


def metrics_url(output: str, key: str) -> str:
    from actors import storage

    return storage.join(output, METRICS_DIR, f"{key}.json")


def read_clip_metrics(output: str, key: str, opts: StorageOptions) -> dict[str, Any] | None:
    """The stored metrics of one clip ({'edit': ..., 'input': ..., 'clip_model': ...}) or None."""
    from actors import storage

    try:
        return json.loads(storage.read_bytes(metrics_url(output, key), opts))
    except (FileNotFoundError, ValueError):
        return None


def _fingerprint(url: str, opts: StorageOptions) -> str:
    # fsspec's ukey: mtime-based for local files, the ETag on S3; changes whenever the output is rewritten.
    from actors import storage

    fs, path = storage.filesystem(url, opts)
    return str(fs.ukey(path))


def read_video(url: str, opts: StorageOptions) -> np.ndarray:
    """uint8 frames of a local or remote video (or local folder of frames)."""
    from actors import storage
    from pipeline.io.video import read_frames

    if storage.is_local(url):
        return read_frames(url).frames
    return read_frames(io.BytesIO(storage.read_bytes(url, opts))).frames


def load_scorer(clip_model: str, device: str | None, dtype: str = "float32") -> ClipScorer:
    from pipeline.quality.clip import ClipScorer

    return ClipScorer.from_model(clip_model, device=device, dtype=dtype)


def evaluate_run(
    output: str,
    opts: StorageOptions,
    *,
    clip_model: str = DEFAULT_CLIP_MODEL,
    device: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    scorer: ClipScorer | None = None,
) -> Evaluation:
    """Score every ok/filtered clip of the run in `output`; write the metric columns into its
    results.parquet and per-frame values into OUTPUT/metrics/. CLIP is loaded only if something
    needs computing."""
    from tqdm import tqdm

    from actors import storage
    from actors.results import RESULTS, read_table, write_table
    from pipeline.quality.metrics import edit_metrics

    output = storage.normalize(output)
    results = storage.join(output, RESULTS)
    if not storage.exists(results, opts):
        raise InputError(f"{results}: no results table; give the OUTPUT of a finished `pix2video run` or `augment`")
    table = read_table(results, opts)
    missing = [c for c in ("video", "prompt", "status", "output") if c not in table.column_names]
    if missing:
        raise InputError(f"{results}: not a results table (no column {missing[0]!r})")
    rows = table.to_pylist()
    ev = Evaluation(table=table, results=results, clip_model=clip_model)
    values: list[dict[str, float | None]] = []
    todo = [r for r in rows if r.get("status") in SCORED and r.get("output")]
    bar = tqdm(total=len(todo), unit="clip", desc="metrics", disable=not progress)
    for row in rows:
        if row.get("status") not in SCORED or not row.get("output"):
            values.append(dict.fromkeys(COLUMNS))
            continue
        key = clip_key(row["output"])
        try:
            stamp = _fingerprint(row["output"], opts)
            stored = None if overwrite else read_clip_metrics(output, key, opts)
            fresh = stored is not None and (
                stored.get("clip_model"),
                stored.get("output_stamp"),
                stored.get("prompt"),
            ) == (clip_model, stamp, row["prompt"])
            if not fresh:
                frames = read_video(row["output"], opts)
                source = read_video(row["video"], opts)
        except (InputError, OSError) as e:
            # One unreadable clip (deleted output, moved input) must not lose the metrics of the rest.
            log.warning("cannot score %s: %s", key, e)
            ev.unreadable.append(key)
            values.append(dict.fromkeys(COLUMNS))
            bar.update()
            continue
        if fresh:
            ev.reused += 1
        else:
            # Loaded at the first clip that needs it; a bad --clip-model fails the command, not the clip.
            scorer = scorer or load_scorer(clip_model, device, dtype)
            try:
                edit, base = edit_metrics(frames, source, row["prompt"], scorer)
            except InputError as e:  # e.g. the input has another frame count than the output
                log.warning("cannot score %s: %s", key, e)
                ev.unreadable.append(key)
                values.append(dict.fromkeys(COLUMNS))
                bar.update()
                continue
            stored = {
                "clip_model": clip_model,
                "output": row["output"],
                "output_stamp": stamp,
                "video": row["video"],
                "prompt": row["prompt"],
                "edit": edit.to_dict(),
                "input": base.to_dict(),
            }
            storage.write_bytes(metrics_url(output, key), json.dumps(stored).encode(), opts)
            ev.computed += 1
        edit, base = Metrics.from_dict(stored["edit"]), Metrics.from_dict(stored["input"])
        values.append({**edit.row(), **base.row(INPUT_PREFIX)})
        bar.update()
    bar.close()
    ev.table = with_metric_columns(table, values)
    write_table(ev.table, results, opts)
    return ev


def with_metric_columns(table: pa.Table, values: list[dict[str, float | None]]) -> pa.Table:
    """`table` with the metric columns replaced (or appended), NaN stored as null."""
    import pyarrow as pa

    for name in COLUMNS:
        column = [None if v.get(name) is None or not math.isfinite(v[name]) else float(v[name]) for v in values]
        array = pa.array(column, type=pa.float64())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table


def apply_bounds(
    table: pa.Table, *, min_clip_text: float | None, max_pixel_mse: float | None
) -> tuple[pa.Table, list[str]]:
    """Mark ok rows outside the bounds as 'filtered' (their outputs stay on disk). Returns the new
    table and the keys (output stems) of the rows filtered."""
    import pyarrow as pa

    from pipeline.quality.metrics import within_bounds

    statuses = table.column("status").to_pylist()
    outputs = table.column("output").to_pylist()
    rows = table.select([c for c in METRIC_NAMES if c in table.column_names]).to_pylist()
    filtered = []
    for i, (status, row) in enumerate(zip(statuses, rows, strict=True)):
        if status == "ok" and not within_bounds(row, min_clip_text=min_clip_text, max_pixel_mse=max_pixel_mse):
            statuses[i] = FILTERED
            filtered.append(clip_key(outputs[i]))
    index = table.column_names.index("status")
    return table.set_column(index, "status", pa.array(statuses, type=pa.string())), filtered


def summary_rows(table: pa.Table) -> list[tuple[str, dict[str, float | None]]]:
    """[('edits (mean over N clips)', means), ('input videos (baseline)', means)] over scored rows."""
    rows = [r for r in table.to_pylist() if r.get("status") in SCORED and r.get("clip_image") is not None]

    def mean(name: str) -> float | None:
        vs = [r[name] for r in rows if r.get(name) is not None and math.isfinite(r[name])]
        return sum(vs) / len(vs) if vs else None

    return [
        (f"edits (mean of {len(rows)})", {n: mean(n) for n in METRIC_NAMES}),
        ("input videos (baseline)", {n: mean(INPUT_PREFIX + n) for n in METRIC_NAMES}),
    ]


def print_evaluation(verb: str, ev: Evaluation) -> None:
    from pipeline.models.loading import TINY
    from pipeline.quality.metrics import format_table

    scored = ev.computed + ev.reused
    print(
        f"pix2video {verb}: metrics for {scored} clips ({ev.computed} computed, {ev.reused} up to date), "
        f"CLIP model {ev.clip_model}"
    )
    if ev.unreadable:
        print(f"{len(ev.unreadable)} clips could not be read and have no metrics: {', '.join(ev.unreadable[:5])}")
    print(format_table(summary_rows(ev.table)))
    print(f"results: {ev.results} (columns {', '.join(COLUMNS)})")
    if ev.clip_model == TINY:
        print(TINY_NOTE)


def scorer_for(args: argparse.Namespace, device: Any = None) -> ClipScorer | None:
    """The CLIP scorer when --metrics was given (loaded before the editing, so a bad --clip-model fails fast)."""
    return load_scorer(clip_model(args), device) if getattr(args, "metrics", False) else None


def print_edit_metrics(output_path: str, input_frames: np.ndarray, prompt: str, scorer: ClipScorer) -> None:
    """Score the output as written (after encoding: what the user gets) against the input frames."""
    from pipeline.io.video import read_frames
    from pipeline.models.loading import TINY
    from pipeline.quality.metrics import edit_metrics, format_table

    edit, base = edit_metrics(read_frames(output_path).frames, input_frames, prompt, scorer)
    print(format_table([("edit", edit), ("input video (baseline)", base)], title=f"metrics (CLIP {scorer.source})"))
    if scorer.source == TINY:
        print(TINY_NOTE)


def after_run(args: argparse.Namespace, opts: StorageOptions, verb: str) -> list[str]:
    """For `run`/`augment` after the dataset is done: score it when --metrics (or a bound) is given,
    apply --min-clip-text/--max-pixel-mse, print what happened. Returns the keys filtered."""
    from actors.results import write_table

    min_ct, max_mse = getattr(args, "min_clip_text", None), getattr(args, "max_pixel_mse", None)
    if not (getattr(args, "metrics", False) or min_ct is not None or max_mse is not None):
        return []
    # On the driver, which may have no GPU even when the editors do: CLIP's device is chosen here
    # (cuda if visible), in float32 whatever the editor's dtype (it is cheap next to the diffusion model).
    ev = evaluate_run(
        args.output,
        opts,
        clip_model=clip_model(args),
        device=None,
        progress=bool(getattr(args, "progress", True)),
    )
    filtered: list[str] = []
    if min_ct is not None or max_mse is not None:
        ev.table, filtered = apply_bounds(ev.table, min_clip_text=min_ct, max_pixel_mse=max_mse)
        write_table(ev.table, ev.results, opts)
    print_evaluation(verb, ev)
    if min_ct is not None or max_mse is not None:
        bounds = [
            f"CLIP-Text < {min_ct}" if min_ct is not None else "",
            f"Pixel-MSE > {max_mse}" if max_mse is not None else "",
        ]
        print(
            f"filtered: {len(filtered)} clips ({' or '.join(b for b in bounds if b)}); status 'filtered' in "
            "results.parquet, their videos kept on disk"
        )
    return filtered


def run(args: argparse.Namespace) -> int:
    opts = _common.storage_options(args)
    ev = evaluate_run(
        args.output,
        opts,
        clip_model=clip_model(args),
        device=args.device,
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    print_evaluation("evaluate", ev)
    return 0


if __name__ == "__main__":
    _common.main_for("evaluate")
