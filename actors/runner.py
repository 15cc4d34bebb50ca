"""The driver loop: precompute tasks stream ahead of a pool of editor actors, with backpressure.

    manifest ─► what is left? ─► precompute tasks (≤ `ahead` videos in flight or waiting)
                                   │  meta (small; frames and depth are in the store)
                                   ▼
                 ready queue ─► editor actors (≤ 2 calls each: one running, one queued, so an
                                   │             actor never waits for the driver's round trip;
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
call may take several ready videos of one working size, which the editor edits in one engine run.
An idle editor takes whatever is ready at once (it never waits for a group to fill); a busy editor's
queued call waits, while its running call lasts, until the group is full or no more videos are
coming. After an editor death the call's videos are retried one per call, so a video that kills its
process cannot take other videos down with it twice.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import resume, storage
from .cluster import leave_room_for_precompute
from .editor import EditorActor, EditSpec, failed_row
from .manifest import Manifest, Unit, VideoJob
from .precompute import TRANSIENT_ERRORS, PrecomputeSpec, precompute_video
from .results import RESULTS, build_table, write_table
from .storage import StorageOptions

log = logging.getLogger(__name__)

CALLS_PER_EDITOR = 2
MAX_VIDEOS_PER_CALL = 8  # --videos-per-call auto: at most this many
STALL_WARNING_S = 300


@dataclass
class RunOptions:
    """Everything `pix2video run` decides; see jobs/run.py for the flags."""

    output: str
    model: str
    caption_model: str
    config: Any  # pipeline.method.editor.EditConfig
    size: tuple[int, int] | None = None
    max_frames: int | None = None
    device: str | None = None
    dtype: str = "float32"
    num_editors: int | None = None  # None: one per GPU, or one per 2 CPUs on a CPU cluster
    gpus_per_editor: float | None = None  # None: 1 when the cluster has GPUs or --device cuda, else 0
    cpus_per_editor: float | None = None  # None: 1 for a CPU editor, 0 for a GPU editor
    precompute_cpus: float = 1.0
    precompute_gpus: float = 0.0  # fractional GPU for DPT/BLIP on GPU clusters, e.g. 0.25
    prefetch: int = 2  # calls' worth of videos precomputed ahead per editor (bounded memory and storage)
    max_attempts: int = 3  # editor deaths per video before it becomes a failed row
    videos_per_call: int | None = None  # None: auto (see `_grouping`); scheduling only, not in the fingerprint
    overwrite: bool = False
    storage: StorageOptions = field(default_factory=StorageOptions)
    progress: bool = True
    fault: dict[str, Any] | None = None  # tests only: see EditorActor._maybe_crash

    def precompute_spec(self) -> PrecomputeSpec:
        return PrecomputeSpec(
            output=self.output,
            model=self.model,
            caption_model=self.caption_model,
            size=self.size,
            max_frames=self.max_frames,
            anchor_last=bool(self.config.reverse),
            # A precompute task without a GPU share sees no GPU (Ray hides them): keep it on the CPU
            # even when --device cuda puts the editors on GPUs.
            device=self.device if self.precompute_gpus > 0 else "cpu",
            dtype=self.dtype,
        )


def settings_fingerprint(opts: RunOptions) -> str:
    """Hash of everything that changes an output's pixels (not how the work is scheduled: schedule,
    batch sizes and videos per call give the same frames)."""
    scheduling = ("schedule", "max_batch", "inversion_batch", "decode_batch")  # same frames either way
    cfg = {k: v for k, v in asdict(opts.config).items() if k not in scheduling}
    data = [opts.model, opts.caption_model, opts.size, opts.max_frames, opts.dtype, cfg]
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    rows: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """videos done / failed / total, frames per second, ETA: a tqdm bar on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        # In a log file (a submitted job) a redraw every few seconds is plenty.
        every = 0.1 if sys.stderr.isatty() else 5.0
        self.bar = tqdm(
            total=total,
            unit="video",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            desc="editing",
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
    import ray

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


def _start_editors(opts: RunOptions, count: int, gpus: float, cpus: float) -> list[Any]:
    import ray

    cls = ray.remote(EditorActor).options(
        num_gpus=gpus,
        num_cpus=cpus,
        max_restarts=-1,  # Ray brings a dead editor back (new process, model reloaded)
        max_task_retries=0,  # ...and we re-dispatch its video to whichever editor is free (see top)
    )
    return [
        cls.remote(opts.model, device=opts.device, dtype=opts.dtype, storage_options=opts.storage, fault=opts.fault)
        for _ in range(count)
    ]


def _precompute_task(opts: RunOptions) -> Any:
    import ray

    return ray.remote(precompute_video).options(
        num_cpus=opts.precompute_cpus,
        num_gpus=opts.precompute_gpus,
        max_retries=3,  # worker or node died: Ray reruns the task elsewhere
        retry_exceptions=list(TRANSIENT_ERRORS),
    )


def _clear_markers(output: str, units: list[Unit], opts: StorageOptions) -> None:
    """--overwrite: forget what was done, so an interrupted overwrite run resumes as a fresh one."""
    fs, _ = storage.filesystem(output, opts)
    paths = [storage.filesystem(resume.marker_url(output, u.key), opts)[1] for u in units]
    existing = [p for p in paths if fs.exists(p)]
    if existing:
        fs.rm(existing)


def run_dataset(manifest: Manifest, opts: RunOptions, *, connect: Callable[[], object] | None = None) -> RunSummary:
    """Edit every (video, prompt) of `manifest` that is not done yet; write results.parquet.

    Needs a connected Ray driver (actors.cluster.connect), or `connect`, which is called only when
    there is work, so a rerun of a finished dataset does not wait for Ray to start.
    """
    started = time.perf_counter()
    opts.output = storage.normalize(opts.output)
    settings = settings_fingerprint(opts)
    # An interrupted run may leave temporaries of unfinished writes; they were never outputs.
    storage.remove_stale_temporaries(opts.output)
    if opts.overwrite:
        _clear_markers(opts.output, manifest.units, opts.storage)
        done: dict[str, dict] = {}
    else:
        done, stale = resume.done_rows(opts.output, settings, opts.storage)
        if stale:
            log.warning(
                "%d finished outputs under %s were made with other settings (model, size, steps, ...) and "
                "will be redone; use another --output to keep them",
                stale,
                opts.output,
            )
    done = {k: v for k, v in done.items() if k in {u.key for u in manifest.units}}
    todo = resume.pending(manifest.units, done)
    jobs = manifest.videos(todo)
    log.info(
        "%d videos x prompts in the manifest: %d done before, %d to do (%d videos)",
        len(manifest.units),
        len(done),
        len(todo),
        len(jobs),
    )
    rows: dict[str, dict[str, Any]] = {}
    idle_share = None
    frames = 0
    drive = _Drive()
    if jobs:
        from .cluster import alive_nodes

        if connect is not None:
            connect()
        if storage.is_local(opts.output) and alive_nodes() > 1:
            log.warning(
                "output %s is a local path on a %d-node cluster: every node must see it "
                "(shared filesystem), else use s3:// or another object store",
                opts.output,
                alive_nodes(),
            )
        drive = _drive(jobs, opts, settings)
        rows, idle_share, frames = drive.rows, drive.idle_share, drive.frames
    elapsed = time.perf_counter() - started

    all_rows = {**done, **rows}
    table = build_table(manifest, all_rows)
    results_url = storage.join(opts.output, RESULTS)
    write_table(table, results_url, opts.storage)
    statuses = table.column("status").to_pylist()
    summary = RunSummary(
        total=len(manifest.units),
        skipped=len(done),
        ok=statuses.count("ok"),
        failed=statuses.count("failed"),
        videos=len(jobs),
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
    return summary


@dataclass
class _Drive:
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    idle_share: float | None = None  # of warm editor time
    frames: int = 0
    editors: int = 0
    gpus_per_editor: float = 0.0
    deaths: int = 0
    calls: int = 0


def _grouping(opts: RunOptions) -> tuple[int, float]:
    """(most videos per call, frames x prompts that make a call full).

    An explicit --videos-per-call N: N videos make a call full. auto: one video with the sequential
    schedule (it runs one item per UNet call, so grouping gains nothing); with a batching schedule,
    videos until their frames x prompts reach twice --max-batch, at most MAX_VIDEOS_PER_CALL. Why
    twice: a wavefront tick holds at most one item per (video, prompt, frame), fewer while each
    clip's wavefront ramps up and down, so twice the batch keeps most ticks full without making the
    engine's feature store (one per video x prompt) larger than needed.
    """
    import torch

    if opts.videos_per_call is not None:
        return opts.videos_per_call, float("inf")
    # What the editors' engine will run (`--schedule auto` resolves per device; it is wavefront on all).
    max_batch = opts.config.engine_settings(torch.device(opts.device or "cpu")).max_batch
    if max_batch == 1:
        return 1, float("inf")
    return MAX_VIDEOS_PER_CALL, 2.0 * max_batch


def _items(job: VideoJob, meta: dict) -> int:
    """A video's frames x pending prompts: what it adds to the engine's batches."""
    return int(meta.get("num_frames") or 1) * len(job.units)


def _pick_group(ready: collections.deque, limit: int, target: float, alone: set[str]) -> tuple[list[int], bool]:
    """Positions in `ready` of the next call's videos (the first, then later ones of its size, in
    order), and whether the call is full. A video retried after an editor death goes alone."""
    first, meta = ready[0]
    picked, items = [0], _items(first, meta)
    if first.name in alone:
        return picked, True
    size = (meta.get("height"), meta.get("width"))
    for pos in range(1, len(ready)):
        if len(picked) >= limit or items >= target:
            break
        job, m = ready[pos]
        if job.name not in alone and (m.get("height"), m.get("width")) == size:
            picked.append(pos)
            items += _items(job, m)
    return picked, len(picked) >= limit or items >= target


def _drive(jobs: list[VideoJob], opts: RunOptions, settings: str) -> _Drive:
    """The streaming loop."""
    import ray
    from ray.exceptions import RayActorError

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
    editors = _start_editors(opts, count, gpus, cpus)
    pre_task = _precompute_task(opts)
    spec = opts.precompute_spec()
    edit_spec = EditSpec(
        output=opts.output,
        settings=settings,
        model=opts.model,
        config=opts.config,
        reuse_inversion=not opts.overwrite,
    )
    limit, target = _grouping(opts)
    # Videos a full call takes: the count given, or (auto) estimated from the last precomputed video.
    per_call = limit if math.isinf(target) else 1

    def ahead() -> int:
        # --prefetch counts calls' worth of videos: a group can only fill from what is precomputed.
        return max(1, count * max(1, opts.prefetch) * per_call)

    waiting = collections.deque(jobs)  # not yet precomputed
    pre_inflight: dict[Any, VideoJob] = {}
    ready: collections.deque[tuple[VideoJob, dict]] = collections.deque()  # precomputed, not dispatched
    calls: dict[Any, tuple[int, list[tuple[VideoJob, dict]]]] = {}  # edit call ref -> (editor, its videos)
    alone: set[str] = set()  # videos retried after an editor death: one per call
    num_calls = 0
    load = [0] * count  # calls in flight per editor
    alive = [True] * count  # False between a crash and the ping that says it is back
    probes: dict[Any, int] = {}
    rows: dict[str, dict[str, Any]] = {}
    warm_pids: set[int] = set()
    idle = busy = 0.0
    deaths = 0
    last_progress = time.monotonic()
    progress = _Progress(len(jobs), opts.progress)

    def finish(job: VideoJob, new_rows: list[dict[str, Any]]) -> None:
        for r in new_rows:
            r = dict(r)
            r.setdefault("attempts", job.attempts)
            rows[r.pop("key")] = r
        progress.video_done(new_rows)

    def fail_all(job: VideoJob, meta: dict | None, error: str) -> None:
        error = storage.redact(error, opts.storage)
        finish(job, [failed_row(u, meta, error) | {"attempts": job.attempts} for u in job.units])

    try:
        while waiting or pre_inflight or ready or calls:
            while waiting and len(pre_inflight) + len(ready) < ahead():
                job = waiting.popleft()
                need_caption = job.source_prompt is None
                ref = pre_task.remote(job.name, job.video, need_caption, spec, opts.storage, opts.overwrite)
                pre_inflight[ref] = job
            while ready:
                free = [i for i in range(count) if alive[i] and load[i] < CALLS_PER_EDITOR]
                if not free:
                    break
                i = min(free, key=lambda j: load[j])
                picked, full = _pick_group(ready, limit, target, alone)
                if load[i] and not full and pre_inflight:
                    # Every free editor is busy: the queued call's group fills from the precomputes
                    # in flight while the running call lasts (with none in flight, ready is at
                    # --prefetch's bound or the manifest is done: nothing more is coming soon).
                    break
                group = [ready[pos] for pos in picked]
                for pos in reversed(picked):
                    del ready[pos]
                for job, _ in group:
                    job.attempts += 1
                ref = editors[i].edit_videos.remote(
                    [(meta, job.units) for job, meta in group], edit_spec, [job.attempts for job, _ in group]
                )
                calls[ref] = (i, group)
                load[i] += 1
                num_calls += 1

            pending = list(pre_inflight) + list(calls) + list(probes)
            finished, _ = ray.wait(pending, num_returns=1, timeout=1.0)
            if finished:
                last_progress = time.monotonic()
            elif not any(alive) and time.monotonic() - last_progress > STALL_WARNING_S:
                # Every editor is waiting to be restarted: Ray does so once resources exist (an
                # autoscaler adds nodes); on a fixed cluster that lost nodes it may never happen.
                log.warning(
                    "no editor has been alive for %d s: Ray restarts them when the cluster has the "
                    "resources they ask for (%g GPU, %g CPU each); Ctrl-C and rerun to resume later",
                    STALL_WARNING_S,
                    gpus,
                    cpus,
                )
                last_progress = time.monotonic()
            for ref in finished:
                if ref in pre_inflight:
                    job = pre_inflight.pop(ref)
                    try:
                        meta = ray.get(ref)
                    except Exception as e:  # retries exhausted: a system or network failure
                        fail_all(job, None, f"precompute failed: {type(e).__name__}: {_first_line(e)}")
                        continue
                    if meta.get("status") != "ok":
                        fail_all(job, meta, meta.get("error") or "precompute failed")
                    else:
                        ready.append((job, meta))
                        if not math.isinf(target):
                            per_call = min(limit, max(1, math.ceil(target / _items(job, meta))))
                elif ref in calls:
                    i, group = calls.pop(ref)
                    load[i] -= 1
                    try:
                        result = ray.get(ref)
                    except RayActorError as e:
                        # The editor died (OOM, lost node, killed): Ray restarts it; the video goes
                        # back to the front of the queue for any editor.
                        deaths += 1
                        if alive[i]:
                            alive[i] = False
                            probes[editors[i].ping.remote()] = i
                        log.warning(
                            "editor %d died while editing %s (attempt %d): %s",
                            i,
                            ", ".join(job.id for job, _ in group),
                            max(job.attempts for job, _ in group),
                            _first_line(e),
                        )
                        # A call sent to this editor after it died but before we knew waits for a
                        # restart that may never come (a lost node on a fixed cluster): take those
                        # back too. If one does run later, its output and marker are atomic rewrites.
                        for other in [r for r, (j, _) in calls.items() if j == i]:
                            group = group + calls.pop(other)[1]
                            load[i] -= 1
                            try:
                                ray.cancel(other)
                            except Exception:  # noqa: BLE001 - best effort: it may have failed already
                                log.debug("could not cancel a call to dead editor %d", i)
                        for job, meta in reversed(group):  # back to the front, in their order
                            if job.attempts >= opts.max_attempts:
                                fail_all(
                                    job,
                                    meta,
                                    f"the editor process died {job.attempts} times while editing "
                                    "this video (out of memory?)",
                                )
                            else:
                                alone.add(job.name)
                                ready.appendleft((job, meta))
                        continue
                    except Exception as e:  # a bug in our code: the videos fail, the run goes on
                        for job, meta in group:
                            fail_all(job, meta, f"{type(e).__name__}: {_first_line(e)}")
                        continue
                    if result["pid"] in warm_pids:
                        idle += result["idle"]
                        busy += result["busy"]
                    warm_pids.add(result["pid"])
                    by_key = {r["key"]: r for r in result["rows"]}
                    for job, _ in group:
                        finish(job, [by_key[u.key] for u in job.units if u.key in by_key])
                else:
                    i = probes.pop(ref)
                    try:
                        ray.get(ref)
                        alive[i] = True
                        log.info("editor %d is back", i)
                    except RayActorError:
                        probes[editors[i].ping.remote()] = i  # still restarting; ask again
    finally:
        progress.close()
        for actor in editors:
            ray.kill(actor, no_restart=True)
    share = idle / (idle + busy) if (idle + busy) > 0 else None
    log.info("%d videos edited in %d editor calls", len(jobs), num_calls)
    return _Drive(rows, share, progress.frames, count, gpus, deaths, num_calls)


def _first_line(e: BaseException, limit: int = 300) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def precompute_dataset(
    manifest: Manifest, opts: RunOptions, *, need_caption: bool = True
) -> list[tuple[VideoJob, dict[str, Any]]]:
    """Precompute only (relabel): every video's meta, ok or failed, in manifest order."""
    import ray

    leave_room_for_precompute(0, 0.0, 0.0, opts.precompute_gpus, opts.precompute_cpus, fixed_count=True)
    opts.output = storage.normalize(opts.output)
    jobs = manifest.videos()
    task = _precompute_task(opts)
    spec = opts.precompute_spec()
    limit = max(2, int(ray.cluster_resources().get("CPU", 2) / max(opts.precompute_cpus, 0.01)) * 2)
    waiting = collections.deque(jobs)
    inflight: dict[Any, VideoJob] = {}
    metas: dict[str, dict[str, Any]] = {}
    progress = _Progress(len(jobs), opts.progress)
    progress.bar.set_description("precompute")
    try:
        while waiting or inflight:
            while waiting and len(inflight) < limit:
                job = waiting.popleft()
                ref = task.remote(job.name, job.video, need_caption, spec, opts.storage, opts.overwrite)
                inflight[ref] = job
            finished, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in finished:
                job = inflight.pop(ref)
                try:
                    meta = ray.get(ref)
                except Exception as e:
                    meta = {
                        "status": "failed",
                        "error": f"precompute failed: {type(e).__name__}: {_first_line(e)}",
                    }
                meta["error"] = storage.redact(meta["error"], opts.storage) if meta.get("error") else None
                metas[job.name] = meta
                progress.bar.update(1)
    finally:
        progress.close()
    return [(job, metas[job.name]) for job in jobs]
