"""The driver's dispatcher: precompute tasks stream ahead of a pool of editor actors.

Split the way datatrove's Ray executor splits its `ray.wait` loop, one small part per question:

    Precomputes   what is in flight in precompute (task refs -> videos), and how many more may start
    Groups        what is ready: precomputed videos, cut into editor calls by manifest order
    Editors       who edits: calls in flight per editor, which editors are alive, the probes of dead ones
    Dispatcher    the loop: start precomputes, send ready calls to free editors, wait, and hand each
                  finished ref to the part it belongs to (a record, a call's rows, an editor death, a probe)

Grouping is fixed by the manifest (issue 8 item 7): a call's videos are consecutive videos of the
manifest (those whose precompute succeeded) of one working size, until the call is full
(`--videos-per-call N` videos, or with `auto` until frames x prompts reach the target). Which videos
share the engine's UNet batches therefore never depends on timing, the number of editors or
--prefetch, and the same command gives the same pixels. (The price: an editor may wait for the
next video in manifest order even when a later one is ready.) The one exception is a retry after an
editor death: that video is edited alone, so a video that kills its process cannot take others down
with it twice.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from pipeline.dataset import storage
from pipeline.dataset.manifest import VideoJob
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.tables import Rows
from pipeline.errors import first_line
from pipeline.stages.edit import failed_row
from pipeline.stages.options import EditSpec, PrecomputeSpec
from pipeline.stages.record import PrecomputeRecord

log = logging.getLogger(__name__)

CALLS_PER_EDITOR = 2  # one running, one queued, so an editor never waits for the driver's round trip
STALL_WARNING_S = 300

Entry = tuple[VideoJob, PrecomputeRecord]  # a precomputed video: its job and its record


def items(job: VideoJob, meta: PrecomputeRecord) -> int:
    """A video's frames x pending prompts: what it adds to the engine's batches."""
    return int(meta.num_frames or 1) * len(job.units)


class Precomputes:
    """The precompute stage: one Ray task per video (Ray retries system and network failures); at
    most `limit()` in flight. `finish(ref)` gives (job, record) with a failed record for a task that
    raised after its retries."""

    def __init__(
        self, task: Any, spec: PrecomputeSpec, opts: StorageOptions, *, need_caption: bool | None, refresh: bool
    ):
        self.task, self.spec, self.opts = task, spec, opts
        self.need_caption, self.refresh = need_caption, refresh
        self.inflight: dict[Any, VideoJob] = {}

    def submit(self, job: VideoJob) -> None:
        caption = job.source_prompt is None if self.need_caption is None else self.need_caption
        shots = list(job.shots) if job.shots is not None else None  # the manifest's, else spec.shots decides
        ref = self.task.remote(job.name, job.video, caption, self.spec, self.opts, self.refresh, shots)
        self.inflight[ref] = job

    def finish(self, ref: Any) -> Entry:
        job = self.inflight.pop(ref)
        try:
            meta = ray.get(ref)
        except Exception as e:  # retries exhausted: a system or network failure
            meta = PrecomputeRecord.failed(f"precompute failed: {type(e).__name__}: {first_line(e)}")
        if meta.error:
            meta.error = storage.redact(meta.error, self.opts)
        return job, meta

    def stream(
        self,
        jobs: list[VideoJob],
        limit: int,
        on_done: Callable[[VideoJob, PrecomputeRecord], object] | None = None,
    ) -> dict[str, PrecomputeRecord]:
        """Precompute `jobs` alone (relabel): at most `limit` in flight; records by video name."""
        waiting = collections.deque(jobs)
        metas: dict[str, PrecomputeRecord] = {}
        while waiting or self.inflight:
            while waiting and len(self.inflight) < limit:
                self.submit(waiting.popleft())
            finished, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
            for ref in finished:
                job, meta = self.finish(ref)
                metas[job.name] = meta
                if on_done is not None:
                    on_done(job, meta)
        return metas

    def __contains__(self, ref: Any) -> bool:
        return ref in self.inflight

    def __len__(self) -> int:
        return len(self.inflight)


class Groups:
    """Precomputed videos, cut into editor calls in manifest order (see the module's docstring).

    `arrive` takes each precompute's result in whatever order they finish; a video joins a call only
    once every video before it in the manifest has arrived, so the cut depends on the records alone.
    """

    def __init__(self, jobs: list[VideoJob], limit: int, target: float) -> None:
        self.position = {job.name: i for i, job in enumerate(jobs)}
        self.total = len(jobs)
        self.limit, self.target = limit, target
        self.arrived: dict[int, Entry | None] = {}  # finished out of order: waiting for earlier videos
        self.next = 0  # manifest position of the next video to place
        self.open: list[Entry] = []
        self.open_items = 0
        self.closed: collections.deque[list[Entry]] = collections.deque()
        self.retries: collections.deque[Entry] = collections.deque()  # after an editor death: alone, first

    def arrive(self, job: VideoJob, meta: PrecomputeRecord | None) -> None:
        """A video's precompute finished: `meta` if it is ready to edit, None if it failed."""
        self.arrived[self.position[job.name]] = None if meta is None else (job, meta)
        while self.next in self.arrived:
            entry = self.arrived.pop(self.next)
            self.next += 1
            if entry is not None:
                self._place(entry)
        if self.next == self.total:
            self._close()  # the manifest is done: the last call goes as it is

    def _place(self, entry: Entry) -> None:
        job, meta = entry
        if self.open and _size(self.open[0][1]) != _size(meta):
            self._close()
        self.open.append(entry)
        self.open_items += items(job, meta)
        if len(self.open) >= self.limit or self.open_items >= self.target:
            self._close()

    def _close(self) -> None:
        if self.open:
            self.closed.append(self.open)
            self.open, self.open_items = [], 0

    def retry(self, entries: list[Entry]) -> None:
        """Videos whose editor died: back to the front, in their order, one per call."""
        self.retries.extendleft(reversed(entries))

    def ready(self) -> bool:
        return bool(self.retries or self.closed)

    def pop(self) -> list[Entry]:
        return [self.retries.popleft()] if self.retries else self.closed.popleft()

    def waiting(self) -> int:
        """Videos precomputed and not sent (the open call aside: at most one call's worth)."""
        return len(self.retries) + sum(len(g) for g in self.closed) + len(self.arrived)

    def __bool__(self) -> bool:
        return bool(self.ready() or self.open or self.arrived)


def _size(meta: PrecomputeRecord) -> tuple[int | None, int | None]:
    return meta.height, meta.width


class Editors:
    """The editor actors: calls in flight per editor, which are alive, and the probes that tell when
    Ray has restarted a dead one (`max_restarts=-1`; calls fail at once, `max_task_retries=0`)."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.load = [0] * len(actors)  # calls in flight per editor
        self.alive = [True] * len(actors)  # False between a death and the ping that says it is back
        self.calls: dict[Any, tuple[int, list[Entry]]] = {}  # edit call ref -> (editor, its videos)
        self.probes: dict[Any, int] = {}
        self.sent = 0

    def free(self) -> int | None:
        """The least loaded alive editor with room for a call, or None."""
        free = [i for i in range(len(self.actors)) if self.alive[i] and self.load[i] < CALLS_PER_EDITOR]
        return min(free, key=lambda i: self.load[i]) if free else None

    def send(self, i: int, group: list[Entry], spec: EditSpec) -> None:
        for job, _ in group:
            job.attempts += 1
        videos = [(meta, job.units) for job, meta in group]
        ref = self.actors[i].edit_videos.remote(videos, spec, [job.attempts for job, _ in group])
        self.calls[ref] = (i, group)
        self.load[i] += 1
        self.sent += 1

    def finish(self, ref: Any) -> tuple[int, list[Entry]]:
        i, group = self.calls.pop(ref)
        self.load[i] -= 1
        return i, group

    def died(self, i: int) -> list[Entry]:
        """Editor `i` died: probe for its restart, and take back the calls sent to it since (they would
        wait for a restart that may never come on a fixed cluster; if one does run later, its output
        and marker are atomic rewrites). Returns those calls' videos."""
        if self.alive[i]:
            self.alive[i] = False
            self.probes[self.actors[i].ping.remote()] = i
        taken: list[Entry] = []
        for ref in [r for r, (j, _) in self.calls.items() if j == i]:
            taken += self.finish(ref)[1]
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort: it may have failed already
                log.debug("could not cancel a call to dead editor %d", i)
        return taken

    def probed(self, ref: Any) -> None:
        i = self.probes.pop(ref)
        try:
            ray.get(ref)
            self.alive[i] = True
            log.info("editor %d is back", i)
        except RayActorError:
            self.probes[self.actors[i].ping.remote()] = i  # still restarting; ask again

    def refs(self) -> list[Any]:
        return list(self.calls) + list(self.probes)

    def stop(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


@dataclass
class Outcome:
    """What the dispatcher did, for the run's summary."""

    rows: Rows = field(default_factory=Rows)  # columnar: a million rows as dicts were gigabytes
    idle_share: float | None = None  # of warm editor time
    frames: int = 0
    editors: int = 0
    gpus_per_editor: float = 0.0
    deaths: int = 0
    calls: int = 0


class Dispatcher:
    """The streaming loop over the three parts; see the module's docstring."""

    def __init__(
        self,
        jobs: list[VideoJob],
        precomputes: Precomputes,
        editors: Editors,
        spec: EditSpec,
        *,
        limit: int,
        target: float,
        prefetch: int,
        max_attempts: int,
        on_video_done: Callable[[list[dict[str, Any]]], object],
        opts: StorageOptions,
    ) -> None:
        self.waiting = collections.deque(jobs)  # not yet precomputed
        self.precomputes, self.editors, self.spec = precomputes, editors, spec
        self.groups = Groups(jobs, limit, target)
        self.limit, self.target = limit, target
        self.prefetch, self.max_attempts = max(1, prefetch), max_attempts
        self.on_video_done, self.opts = on_video_done, opts  # each finished video's rows (the progress bar)
        # Videos a full call takes: the count given, or (auto) estimated from the last precomputed video.
        self.per_call = limit if math.isinf(target) else 1
        self.rows = Rows()  # typed into Arrow columns as they come
        self.frames = 0  # frames edited (frames x prompts of the ok rows)
        self.warm_pids: set[int] = set()
        self.idle = self.busy = 0.0
        self.deaths = 0

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        last_progress = time.monotonic()
        while self.waiting or self.precomputes or self.groups or self.editors.calls:
            self._start_precomputes()
            self._send_ready()
            pending = list(self.precomputes.inflight) + self.editors.refs()
            finished, _ = ray.wait(pending, num_returns=1, timeout=1.0)
            if finished:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_WARNING_S and not any(self.editors.alive):
                self._warn_stalled()
                last_progress = time.monotonic()
            for ref in finished:
                if ref in self.precomputes:
                    self._precomputed(ref)
                elif ref in self.editors.calls:
                    self._edited(ref)
                else:
                    self.editors.probed(ref)

    def _ahead(self) -> int:
        # --prefetch counts calls' worth of videos: a call can only fill from what is precomputed.
        return max(1, len(self.editors.actors) * self.prefetch * self.per_call)

    def _start_precomputes(self) -> None:
        while self.waiting and len(self.precomputes) + self.groups.waiting() < self._ahead():
            self.precomputes.submit(self.waiting.popleft())

    def _send_ready(self) -> None:
        while self.groups.ready():
            i = self.editors.free()
            if i is None:
                return
            self.editors.send(i, self.groups.pop(), self.spec)

    def _warn_stalled(self) -> None:
        # Every editor is waiting to be restarted: Ray does so once resources exist (an autoscaler
        # adds nodes); on a fixed cluster that lost nodes it may never happen.
        log.warning(
            "no editor has been alive for %d s: Ray restarts them when the cluster has the resources "
            "they ask for; Ctrl-C and rerun to resume later",
            STALL_WARNING_S,
        )

    # ---------------------------------------------------------------- what finished

    def _precomputed(self, ref: Any) -> None:
        job, meta = self.precomputes.finish(ref)
        if not meta.ok:
            self._fail(job, meta, meta.error or "precompute failed")
            self.groups.arrive(job, None)
            return
        self.groups.arrive(job, meta)
        if not math.isinf(self.target):
            self.per_call = min(self.limit, max(1, math.ceil(self.target / items(job, meta))))

    def _edited(self, ref: Any) -> None:
        i, group = self.editors.finish(ref)
        try:
            result = ray.get(ref)
        except RayActorError as e:
            self._editor_died(i, group, e)
            return
        except Exception as e:  # a bug in our code: the videos fail, the run goes on
            for job, meta in group:
                self._fail(job, meta, f"{type(e).__name__}: {first_line(e)}")
            return
        if result["pid"] in self.warm_pids:
            self.idle += result["idle"]
            self.busy += result["busy"]
        self.warm_pids.add(result["pid"])
        by_key = {r["key"]: r for r in result["rows"]}
        for job, _ in group:
            self._finish(job, [by_key[u.key] for u in job.units if u.key in by_key])

    def _editor_died(self, i: int, group: list[Entry], e: BaseException) -> None:
        """The editor died (OOM, lost node, killed): Ray restarts it; its videos go back to the front
        of the queue, one per call, for any editor, until they have used up their attempts."""
        self.deaths += 1
        log.warning(
            "editor %d died while editing %s (attempt %d): %s",
            i,
            ", ".join(job.id for job, _ in group),
            max(job.attempts for job, _ in group),
            first_line(e),
        )
        retry = []
        for job, meta in group + self.editors.died(i):
            if job.attempts >= self.max_attempts:
                error = f"the editor process died {job.attempts} times while editing this video (out of memory?)"
                self._fail(job, meta, error)
            else:
                retry.append((job, meta))
        self.groups.retry(retry)

    def _finish(self, job: VideoJob, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            r = dict(r)
            if r.get("attempts") is None:
                r["attempts"] = job.attempts
            self.rows.add(r.pop("key"), r)
        self.frames += sum(int(r.get("num_frames") or 0) for r in rows if r["status"] == "ok")
        self.on_video_done(rows)

    def _fail(self, job: VideoJob, meta: PrecomputeRecord | None, error: str) -> None:
        error = storage.redact(error, self.opts)
        self._finish(job, [failed_row(u, meta, error, attempts=job.attempts) for u in job.units])

    def outcome(self, gpus: float) -> Outcome:
        total = self.idle + self.busy
        return Outcome(
            rows=self.rows,
            idle_share=self.idle / total if total > 0 else None,
            frames=self.frames,
            editors=len(self.editors.actors),
            gpus_per_editor=gpus,
            deaths=self.deaths,
            calls=self.editors.sent,
        )
