"""The driver loop: precompute tasks stream ahead of a pool of editor actors, with backpressure.

    manifest ─► what is left? ─► precompute tasks (≤ `ahead` videos in flight or waiting)
                                   │  PrecomputeRecord (small; frames and depth are in the store)
                                   ▼
       calls cut in manifest order ─► editor actors (≤ 2 calls each: one running, one queued, so
                                   │             an actor never waits for the driver's round trip;
                                   │             a call takes one or several videos of one size)
                                   ▼
                 rows ─► markers (written by the actor) ─► results.parquet (written here, at the end)

Faults. Precompute tasks: system failures (worker crash, lost node) and network errors are retried
by Ray (`max_retries`, `retry_exceptions`); a bad video comes back as data. Editor actors: Ray
restarts a dead actor (`max_restarts=-1`); its calls fail at once (`max_task_retries=0`) and the
driver puts the video back at the front of the queue for whichever actor is free first, up to
`max_attempts` times. We do not let Ray retry the call on the same actor: after a lost node that
actor may wait for resources forever, and a video that kills every process it touches (OOM)
would be retried forever; here it becomes a failed row.

Grouping (`--videos-per-call`). Short clips leave a batching schedule's UNet calls half empty, so a
call may take several videos of one working size, which the editor edits in one engine run. Which
videos share a call is fixed by the manifest (consecutive videos of one size until the call is full),
never by timing, so the same command gives the same pixels whatever the number of editors or
--prefetch. After an editor death the call's videos are retried one per call, so a video that kills
its process cannot take other videos down with it twice. The loop itself is actors/dispatch.py.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from tqdm import tqdm

from pipeline.dataset import resume, storage
from pipeline.dataset.manifest import Manifest, VideoJob
from pipeline.dataset.results import build_table, keep_scores, previous_scores
from pipeline.dataset.tables import RESULTS, Rows, write_table
from pipeline.stages.options import MAX_VIDEOS_PER_CALL, RunOptions
from pipeline.stages.record import PrecomputeRecord

from . import editor, metrics
from .cluster import alive_nodes, leave_room_for_precompute
from .dispatch import Dispatcher, Editors, Outcome, Precomputes
from .precompute import precompute_task

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    total: int  # units in the manifest
    skipped: int  # already done before this run
    ok: int  # ok rows in the table (done before or now)
    failed: int
    videos: int  # videos worked on in this run
    frames: int  # frames edited in this run (frames x prompts)
    seconds: float
    editor_idle_share: float | None  # share of warm editor time spent waiting for work
    results: str  # URL of results.parquet
    editors: int = 0  # editor actors started
    gpus_per_editor: float = 0.0
    editor_deaths: int = 0  # editor processes that died mid-video (their videos were redone)
    editor_calls: int = 0  # edit calls sent to editors (fewer than videos when videos were grouped)
    rows: Rows = field(default_factory=Rows, repr=False)  # by unit key, Arrow columns (a mapping of row dicts)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """videos done / failed / total, frames per second, ETA: a tqdm bar on stderr."""

    def __init__(self, total: int, enabled: bool, desc: str = "editing") -> None:
        # In a log file (a submitted job) a redraw every few seconds is plenty.
        every = 0.1 if sys.stderr.isatty() else 5.0
        self.bar = tqdm(
            total=total,
            unit="video",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            desc=desc,
            smoothing=0.1,
            mininterval=every,
        )
        self.failed = 0
        self.frames = 0
        self.start = time.perf_counter()

    def video_done(self, rows: list[dict[str, Any]]) -> None:
        if any(r["status"] != "ok" for r in rows):
            self.failed += 1
        self.frames += sum(int(r.get("num_frames") or 0) for r in rows if r["status"] == "ok")
        fps = self.frames / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"failed={self.failed} frames/s={fps:.2f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _editor_resources(opts: RunOptions) -> tuple[float, float, int]:
    """(num_gpus, num_cpus, count) for the editor actors."""
    res = ray.cluster_resources()
    gpus = opts.gpus_per_editor
    if gpus is None:
        wants_cuda = (opts.device or "").startswith("cuda")
        gpus = 1.0 if (res.get("GPU", 0) > 0 or wants_cuda) else 0.0
    # A GPU editor's CPU thread mostly waits on the GPU: reserving no CPU for it leaves the node's CPUs
    # to the precompute tasks that feed it.
    cpus = opts.cpus_per_editor if opts.cpus_per_editor is not None else (0.0 if gpus else 1.0)
    count = opts.num_editors
    if count is None:
        if gpus:
            count = max(1, int(res.get("GPU", 0) // gpus))
        else:
            count = max(1, int(res.get("CPU", 1)) // 2)
    # Never a run that waits forever: fewer editors, or a one-line refusal, when they would leave a
    # precompute task no room (e.g. --precompute-gpus 0.25 on a fixed cluster whose GPUs all go to editors).
    count = leave_room_for_precompute(
        count, gpus, cpus, opts.precompute_gpus, opts.precompute_cpus, fixed_count=opts.num_editors is not None
    )
    return gpus, cpus, count


def _locate(opts: RunOptions) -> None:
    """The output and --precompute-store: checked (one line before any work) and made absolute. The
    store's stale temporaries are left alone: other runs may be writing there now."""
    resume.check_output_location(opts.output)  # a read-only output is one line
    if opts.precompute_store:
        resume.check_output_location(opts.precompute_store, "--precompute-store")
    opts.locate()


def run_dataset(manifest: Manifest, opts: RunOptions, *, connect: Callable[[], object] | None = None) -> RunSummary:
    """Edit every (video, prompt) of `manifest` that is not done yet; write results.parquet.

    Needs a connected Ray driver (actors.cluster.connect), or `connect`, which is called only when
    there is work, so a rerun of a finished dataset does not wait for Ray to start.
    """
    _locate(opts)
    with resume.OutputLock(opts.output):  # a second run on this output stops here, in one line
        return _run_locked(manifest, opts, connect)


def _run_locked(manifest: Manifest, opts: RunOptions, connect: Callable[[], object] | None) -> RunSummary:
    started = time.perf_counter()
    settings = opts.fingerprint()
    # An interrupted run may leave temporaries of unfinished writes; they were never outputs.
    storage.remove_stale_temporaries(opts.output)
    # --overwrite forgets nothing up front: each unit is redone and its output and marker replaced only
    # as the new ones land (this run's token in the marker tells them apart), so a run that fails to
    # start or is stopped midway keeps every finished output it has not redone yet.
    run_token = uuid.uuid4().hex
    if opts.overwrite:
        done = Rows()
    else:
        done, stale = resume.done_rows(opts.output, settings, opts.storage)
        if stale:
            log.warning(
                "%d finished outputs under %s were made with other settings (model, size, steps, ...) and "
                "will be redone; use another --output to keep them",
                stale,
                opts.output,
            )
    keys = manifest.keys()
    done = resume.of_units(done, manifest.units, keys)  # markers of other manifests' units are not this run's
    todo = resume.pending(manifest.units, done, keys)
    jobs = manifest.videos(todo)
    log.info(
        "%d videos x prompts in the manifest: %d done before, %d to do (%d videos)",
        len(manifest.units),
        len(done),
        len(todo),
        len(jobs),
    )
    rows = Rows()
    idle_share = None
    frames = 0
    drive = Outcome()
    if jobs:
        if connect is not None:
            connect()
        if storage.is_local(opts.output) and alive_nodes() > 1:
            log.warning(
                "output %s is a local path on a %d-node cluster: every node must see it "
                "(shared filesystem), else use s3:// or another object store",
                opts.output,
                alive_nodes(),
            )
        try:
            drive = _drive(jobs, opts, run_token)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the table of what is done, then the interrupt
            _write_partial_table(manifest, opts, settings)
            seconds = time.perf_counter() - started
            stats = {"settings": settings, "run": run_token, "total": len(manifest.units), "done_before": len(done)}
            metrics.write_run_stats(opts, **stats, seconds=seconds, interrupted=True)  # OUTPUT/stats.json
            raise
        rows, idle_share, frames = Rows.of_dicts(drive.rows), drive.idle_share, drive.frames
        # Workers killed during this run (OOM, a lost node) leave temporaries too; every task and call
        # of the run is over now, and the lock keeps other runs out, so none is being written.
        storage.remove_stale_temporaries(opts.output)
    videos = len(jobs)
    del todo, jobs  # a pending video's job and units: no longer needed, and many in a large rerun
    elapsed = time.perf_counter() - started

    # Units done before keep what `evaluate` and augment's bounds added (their outputs are unchanged).
    # This run's rows first: where a unit is in both (never, but for a dict's sake), its new row wins.
    all_rows = Rows.merged(rows, keep_scores(done, previous_scores(opts.output, opts.storage)))
    table = build_table(manifest, all_rows)
    results_url = storage.join(opts.output, RESULTS)
    write_table(table, results_url, opts.storage)
    statuses = table.column("status").value_counts().to_pylist()  # columnar: no string per row
    count = {c["values"]: c["counts"] for c in statuses}
    summary = RunSummary(
        total=len(manifest.units),
        skipped=len(done),
        ok=count.get("ok", 0),
        failed=count.get("failed", 0),
        videos=videos,
        frames=frames,
        seconds=elapsed,
        editor_idle_share=idle_share,
        results=results_url,
        editors=drive.editors,
        gpus_per_editor=drive.gpus_per_editor,
        editor_deaths=drive.deaths,
        editor_calls=drive.calls,
        rows=all_rows,
    )
    stats = {"settings": settings, "run": run_token, "total": summary.total, "done_before": len(done)}
    metrics.write_run_stats(opts, **stats, seconds=elapsed, table=table, summary=summary)  # OUTPUT/stats.json
    return summary


def _write_partial_table(manifest: Manifest, opts: RunOptions, settings: str) -> None:
    """An interrupted run's results table: every unit whose marker and mp4 are on storage now (done
    before this run or by it), so the table never lists an output that is not there. A rerun of the
    same command finishes the rest."""
    try:
        done, _ = resume.done_rows(opts.output, settings, opts.storage)
        done = resume.of_units(done, manifest.units, manifest.keys())
        rows = keep_scores(done, previous_scores(opts.output, opts.storage))
        write_table(build_table(manifest, rows), storage.join(opts.output, RESULTS), opts.storage)
        log.info(
            "interrupted: %d of %d videos x prompts done; rerun the same command to finish",
            len(done),
            len(manifest.units),
        )
    except Exception as e:  # noqa: BLE001 - the interrupt matters more; the next run rebuilds the table
        log.warning("interrupted, and the results table could not be written (%s)", type(e).__name__)


def _grouping(opts: RunOptions) -> tuple[int, float]:
    """(most videos per call, frames x prompts that make a call full).

    An explicit --videos-per-call N: N videos make a call full. auto: one video with the sequential
    schedule (it runs one item per UNet call, so grouping gains nothing); with a batching schedule,
    videos until their frames x prompts reach twice --max-batch, at most MAX_VIDEOS_PER_CALL. Why
    twice: a wavefront tick holds at most one item per (video, prompt, frame), fewer while each
    clip's wavefront ramps up and down, so twice the batch keeps most ticks full without making the
    engine's feature store (one per video x prompt) larger than needed.
    """
    if opts.videos_per_call is not None:
        return opts.videos_per_call, float("inf")
    max_batch = opts.config.engine_settings().max_batch  # what the editors' engine will run
    if max_batch == 1:
        return 1, float("inf")
    return MAX_VIDEOS_PER_CALL, 2.0 * max_batch


def _drive(jobs: list[VideoJob], opts: RunOptions, run_token: str) -> Outcome:
    """Start the editors and the precompute stage, and let the dispatcher stream `jobs` through them."""
    gpus, cpus, count = _editor_resources(opts)
    count = min(count, len(jobs))
    log.info(
        "editors: %d x (%g GPU, %g CPU); precompute tasks: %g CPU, %g GPU",
        count,
        gpus,
        cpus,
        opts.precompute_cpus,
        opts.precompute_gpus,
    )
    editors = editor.start_editors(opts, count, gpus, cpus)
    edit_spec = opts.edit_spec(run_token)
    limit, target = _grouping(opts)
    precomputes = Precomputes(
        precompute_task(opts), opts.precompute_spec(), opts.storage, need_caption=None, refresh=opts.overwrite
    )
    progress = _Progress(len(jobs), opts.progress)
    # On an object store the driver keeps the markers index as units finish, so that the scan after a
    # crash GETs only the markers of the run's last seconds (resume.IndexWriter).
    index = resume.IndexWriter(opts.output, edit_spec.settings, run_token, opts.storage)

    def video_done(rows: list[dict[str, Any]]) -> None:
        progress.video_done(rows)
        index.add(rows)

    dispatcher = Dispatcher(
        jobs,
        precomputes,
        Editors(editors),
        edit_spec,
        limit=limit,
        target=target,
        prefetch=opts.prefetch,
        max_attempts=opts.max_attempts,
        on_video_done=video_done,
        opts=opts.storage,
    )
    live = metrics.LiveMetrics.watch(dispatcher, run_token)  # the run's Ray metrics while it goes
    try:
        dispatcher.run()
    finally:
        live.close()
        progress.close()
        index.close()
        dispatcher.editors.stop()
    outcome = dispatcher.outcome(gpus)
    log.info("%d videos edited in %d editor calls", len(jobs), outcome.calls)
    return outcome


def precompute_dataset(
    manifest: Manifest, opts: RunOptions, *, need_caption: bool = True
) -> list[tuple[VideoJob, PrecomputeRecord]]:
    """Precompute only (relabel): every video's record, ok or failed, in manifest order."""
    _locate(opts)
    leave_room_for_precompute(0, 0.0, 0.0, opts.precompute_gpus, opts.precompute_cpus, fixed_count=True)
    with resume.OutputLock(opts.output):
        return _precompute_locked(manifest, opts, need_caption)


def _precompute_locked(
    manifest: Manifest, opts: RunOptions, need_caption: bool
) -> list[tuple[VideoJob, PrecomputeRecord]]:
    jobs = manifest.videos()
    stage = Precomputes(
        precompute_task(opts), opts.precompute_spec(), opts.storage, need_caption=need_caption, refresh=opts.overwrite
    )
    # Two tasks per CPU they fit on: enough queued that no CPU waits for the driver.
    limit = max(2, int(ray.cluster_resources().get("CPU", 2) / max(opts.precompute_cpus, 0.01)) * 2)
    progress = _Progress(len(jobs), opts.progress, desc="precompute")  # named at once: no "editing" bar drawn
    try:
        metas = stage.stream(jobs, limit, on_done=lambda _job, _meta: progress.bar.update(1))
    finally:
        progress.close()
    return [(job, metas[job.name]) for job in jobs]
