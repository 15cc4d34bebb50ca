"""Scoring a finished run with the paper's metrics: the metric columns of results.parquet.

For every clip with status ok (or filtered): CLIP-Text, CLIP-Image and Pixel-MSE of the output, and
the same three on the input video as the baseline (columns input_*); see pipeline/quality/metrics.py.
Per-frame values go to OUTPUT/metrics/<key>.json, with the output's storage stamp (fsspec `ukey`:
mtime locally, the ETag on S3) and the CLIP model: a rerun reuses a clip's values until its output is
rewritten, its prompt or the CLIP model changes (or `overwrite`). Those records, the bounds and the
summary are the data layer's (`pipeline.dataset.stored_metrics`); this module is who computes them.

Who computes what is left:
- `run --metrics`: the editor actors, while each clip is in memory (EditorActor, `score_written`);
  what `evaluate_run` then finds is up to date.
- `evaluate_run` on a connected Ray driver: a pool of metric actors (`ray.util.ActorPool`), each
  loading CLIP once, one clip per call; a stateless map, so Ray's own pool does the scheduling.
- without Ray (a notebook, or a `scorer` given): in this process, one clip after the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import ray
from ray.util import ActorPool
from tqdm import tqdm

from pipeline.dataset import storage
from pipeline.dataset.results import clip_key, read_results
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.stored_metrics import (
    apply_bounds,
    is_fresh,
    output_stamp,
    read_clip_metrics,
    read_video,
    score_written,
    stored_values,
)
from pipeline.dataset.tables import METRIC_COLUMNS, RESULTS, SCORED, with_metric_columns, write_table
from pipeline.errors import InputError, first_line
from pipeline.models.names import DEFAULT_CLIP_MODEL
from pipeline.quality.clip import ClipScorer

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What `evaluate_run` did: the updated table, and how many clips were computed, reused, unreadable."""

    table: pa.Table
    results: str
    computed: int = 0
    reused: int = 0
    unreadable: list[str] = field(default_factory=list)
    clip_model: str = DEFAULT_CLIP_MODEL
    filtered: list[str] = field(default_factory=list)  # keys marked 'filtered' by `score_run`'s bounds


def load_scorer(clip_model: str, device: str | None, dtype: str = "float32") -> ClipScorer:
    return ClipScorer.from_model(clip_model, device=device, dtype=dtype)


class MetricsActor:
    """CLIP loaded once; scores one clip per call (reads the output and its input video)."""

    def __init__(
        self,
        output: str,
        clip_model: str,
        device: str | None,
        dtype: str,
        opts: StorageOptions,
        scorer: ClipScorer | None = None,
    ) -> None:
        self.output, self.opts = output, opts
        self.scorer, self.fatal = scorer, None
        if scorer is None:
            try:
                self.scorer = load_scorer(clip_model, device, dtype)
            except InputError as e:  # a bad --clip-model fails the command (one line), not each clip
                self.fatal = str(e)

    def score(self, item: dict[str, Any]) -> dict[str, Any]:
        if self.scorer is None:
            return {**item, "fatal": self.fatal}
        try:
            frames = read_video(item["output"], self.opts)
            source = read_video(item["video"], self.opts)
            stored = score_written(self.output, item["key"], item, frames, source, self.scorer, self.opts)
        except (InputError, OSError) as e:  # one unreadable clip must not lose the metrics of the rest
            return {**item, "problem": first_line(e) or type(e).__name__}
        return {**item, "stored": stored}


def _score_here(todo: list[dict[str, Any]], actor: MetricsActor) -> Iterator[dict[str, Any]]:
    for item in todo:
        yield actor.score(item)


def _score_on_ray(
    todo: list[dict[str, Any]], output: str, clip_model: str, device: str | None, dtype: str, opts: StorageOptions
) -> Iterator[dict[str, Any]]:
    """The clips in `todo` on a pool of metric actors (one per 2 CPUs, at most one per clip)."""
    res = ray.cluster_resources()
    gpus = 0.25 if res.get("GPU", 0) > 0 and device != "cpu" else 0.0
    count = max(1, min(len(todo), int(res.get("CPU", 1)) // 2))
    cls = ray.remote(MetricsActor).options(num_cpus=1, num_gpus=gpus)
    actors = [cls.remote(output, clip_model, device, dtype, opts) for _ in range(count)]
    try:
        yield from ActorPool(actors).map_unordered(lambda a, item: a.score.remote(item), todo)
    finally:
        for a in actors:
            ray.kill(a)


def _scores(
    todo: list[dict[str, Any]],
    output: str,
    clip_model: str,
    device: str | None,
    dtype: str,
    opts: StorageOptions,
    scorer: ClipScorer | None,
    connect: Callable[[], object] | None,
) -> Iterator[dict[str, Any]]:
    """The results of scoring `todo`: with the `scorer` given, here; else on Ray when connected (or
    `connect` connects), else here with CLIP loaded once."""
    if scorer is None and connect is not None:
        connect()
    if scorer is None and ray.is_initialized():
        return _score_on_ray(todo, output, clip_model, device, dtype, opts)
    return _score_here(todo, MetricsActor(output, clip_model, device, dtype, opts, scorer))


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
    connect: Callable[[], object] | None = None,
) -> Evaluation:
    """Score every ok/filtered clip of the run in `output` that has no up-to-date metrics; write the
    metric columns into its results.parquet. Clips are scored on Ray when a driver is connected (or
    `connect` connects one; called only when something needs computing), else here."""
    output = storage.normalize(output)
    results = storage.join(output, RESULTS)
    table = read_results(output, opts)  # missing, corrupt or foreign: one line
    rows = table.to_pylist()
    ev = Evaluation(table=table, results=results, clip_model=clip_model)
    values: list[dict[str, Any]] = [dict.fromkeys(METRIC_COLUMNS) for _ in rows]
    todo: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if row.get("status") not in SCORED or not row.get("output"):
            continue
        key = clip_key(row["output"])
        try:
            stamp = output_stamp(row["output"], opts)
        except (InputError, OSError) as e:  # a deleted output: the other clips keep their metrics
            log.warning("cannot score %s: %s", key, e)
            ev.unreadable.append(key)
            continue
        stored = None if overwrite else read_clip_metrics(output, key, opts)
        if is_fresh(stored, clip_model, stamp, row["prompt"]):
            values[i] = stored_values(stored)
            ev.reused += 1
        else:
            todo.append({"index": i, "key": key, **{k: row[k] for k in ("output", "video", "prompt")}})
    if todo:
        bar = tqdm(total=len(todo), unit="clip", desc="metrics", disable=not progress)
        for result in _scores(todo, output, clip_model, device, dtype, opts, scorer, connect):
            bar.update()
            if result.get("fatal"):
                raise InputError(result["fatal"])
            if result.get("problem"):
                log.warning("cannot score %s: %s", result["key"], result["problem"])
                ev.unreadable.append(result["key"])
                continue
            values[result["index"]] = stored_values(result["stored"])
            ev.computed += 1
        bar.close()
    ev.table = with_metric_columns(table, values)
    write_table(ev.table, results, opts)
    return ev


def score_run(
    output: str,
    opts: StorageOptions,
    *,
    clip_model: str,
    min_clip_text: float | None = None,
    max_pixel_mse: float | None = None,
    progress: bool = True,
    connect: Callable[[], object] | None = None,
) -> Evaluation:
    """After `run`/`augment`: the metrics of what is not scored yet (the editors scored what they
    made with --metrics), then the bounds: rows outside them become 'filtered' (`Evaluation.filtered`).
    CLIP runs on the workers' devices, in float32 whatever the editors' dtype (it is cheap next to the
    diffusion model)."""
    ev = evaluate_run(output, opts, clip_model=clip_model, progress=progress, connect=connect)
    if min_clip_text is not None or max_pixel_mse is not None:
        ev.table, ev.filtered = apply_bounds(ev.table, min_clip_text=min_clip_text, max_pixel_mse=max_pixel_mse)
        write_table(ev.table, ev.results, opts)
    return ev
