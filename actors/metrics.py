"""A run's live figures as Ray metrics, and its OUTPUT/stats.json at the end.

Live (`ray.util.metrics`, so the Ray dashboard's metrics view and any Prometheus that scrapes the
nodes show them; Ray prefixes each name with `ray_`), every series tagged `run` (the run's token,
first 12 hex digits):

    pix2video_videos_total{status}          videos finished by this run (failed: any of its prompts)
    pix2video_units_total{status}           videos x prompts finished by this run
    pix2video_frames_edited_total           frames x prompts of the ok outputs
    pix2video_seconds_total{stage}          seconds spent in each stage (decode, depth, caption, load,
                                            invert, edit, write): exact sums
    pix2video_stage_seconds{stage}          histogram: seconds per video in each stage (Ray estimates a
                                            histogram's _sum from its buckets: use the counter for sums)
    pix2video_editor_busy_share             share of warm editor time spent editing (0..1)
    pix2video_videos_waiting                precomputed videos waiting for an editor
    pix2video_videos_precomputing           precompute tasks in flight
    pix2video_videos_remaining              videos not yet started
    pix2video_editors_alive                 editor actors alive (not waiting for a restart)

The dispatcher is watched, not changed: `LiveMetrics.watch` wraps its per-video callback (counts,
frames, stage seconds) and a thread reads its queues every `interval` seconds (the gauges). A local
instance started with `--metrics-port PORT` serves them on http://127.0.0.1:PORT/metrics; without
it Ray picks a port (`metrics_endpoint()` says which).

`write_run_stats` builds OUTPUT/stats.json with pipeline/dataset/stats.py from the results table,
the run's figures and what the watcher saw (the editors' devices).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import ray
from ray.util.metrics import Counter, Gauge, Histogram

from pipeline.dataset import stats as run_stats
from pipeline.dataset import storage
from pipeline.dataset.tables import RESULTS, read_table
from pipeline.errors import InputError

log = logging.getLogger(__name__)

PREFIX = "pix2video_"
STAGE_BOUNDARIES = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
_SEEN: dict[str, dict[str, Any]] = {}  # run token -> what its watcher saw, for write_run_stats


def run_tag(run: str) -> str:
    return run[:12]


def check_metrics_port(port: int | None, address: str | None = None) -> None:
    """--metrics-port: a port Ray's exporter can bind on 127.0.0.1, for a local instance (`address` None
    or `local`), checked before Ray starts and before anything is written (one line)."""
    if port is None:
        return
    if address not in (None, "", "local"):
        raise InputError(
            f"--metrics-port {port}: only a local Ray instance takes it; the nodes of the cluster at {address} "
            "export metrics on the port `ray start --metrics-export-port` gave them"
        )
    if not 1 <= port <= 65535:
        raise InputError(f"--metrics-port {port}: not a port number (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            reason = "in use" if e.errno == errno.EADDRINUSE else (e.strerror or type(e).__name__)
            raise InputError(
                f"--metrics-port {port}: the metrics endpoint cannot start on 127.0.0.1:{port} ({reason}); "
                "choose another port"
            ) from None


def metrics_endpoint() -> str | None:
    """http://HOST:PORT/metrics of this driver's node (Prometheus text), or None when Ray exports none."""
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("MetricsExportPort", 0) > 0:
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


class LiveMetrics:
    """The live metrics of one run; see the module's docstring. Use `watch` then `close`."""

    def __init__(self, run: str, *, interval: float = 1.0) -> None:
        self.run, self.interval = run, interval
        self.tags = {"run": run_tag(run)}
        keys = ("run",)
        self.videos = Counter(f"{PREFIX}videos", "videos finished by this run, by status", tag_keys=(*keys, "status"))
        self.units = Counter(f"{PREFIX}units", "videos x prompts finished by this run", tag_keys=(*keys, "status"))
        self.frames = Counter(f"{PREFIX}frames_edited", "frames x prompts of the ok outputs", tag_keys=keys)
        self.seconds = Counter(f"{PREFIX}seconds", "seconds spent in each stage", tag_keys=(*keys, "stage"))
        self.stage_seconds = Histogram(
            f"{PREFIX}stage_seconds", "seconds per video in each stage", STAGE_BOUNDARIES, tag_keys=(*keys, "stage")
        )
        self.busy_share = Gauge(f"{PREFIX}editor_busy_share", "share of warm editor time spent editing", keys)
        self.waiting = Gauge(f"{PREFIX}videos_waiting", "precomputed videos waiting for an editor", keys)
        self.precomputing = Gauge(f"{PREFIX}videos_precomputing", "precompute tasks in flight", keys)
        self.remaining = Gauge(f"{PREFIX}videos_remaining", "videos not yet started", keys)
        self.alive = Gauge(f"{PREFIX}editors_alive", "editor actors alive", keys)
        self.counts: dict[str, int] = {"videos": 0, "failed": 0, "frames": 0}
        self._dispatcher: Any = None
        self._pings: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def watch(cls, dispatcher: Any, run: str, *, interval: float = 1.0) -> LiveMetrics:
        """Start watching `dispatcher` (actors.dispatch.Dispatcher) before its `run()`."""
        live = cls(run, interval=interval)
        live._dispatcher = dispatcher
        dispatcher.on_video_done = live.wrap(dispatcher.on_video_done)
        # Each editor's device, asked once: the first call each actor answers, so it waits for nothing.
        live._pings = [actor.ping.remote() for actor in dispatcher.editors.actors]
        live.sample()
        live._thread = threading.Thread(target=live._sample_until_closed, name="pix2video-metrics", daemon=True)
        live._thread.start()
        return live

    def wrap(self, callback: Callable[[list[dict[str, Any]]], object]) -> Callable[[list[dict[str, Any]]], object]:
        def on_video_done(rows: list[dict[str, Any]]) -> object:
            self.video_done(rows)
            self.sample()  # the gauges as the counters move, not up to `interval` behind them
            return callback(rows)

        return on_video_done

    def video_done(self, rows: list[dict[str, Any]]) -> None:
        """One video finished (all its prompts' rows)."""
        status = "ok" if rows and all(r.get("status") == "ok" for r in rows) else "failed"
        self.videos.inc(1, tags={**self.tags, "status": status})
        for r in rows:
            self.units.inc(1, tags={**self.tags, "status": str(r.get("status"))})
        frames = sum(int(r.get("num_frames") or 0) for r in rows if r.get("status") == "ok")
        if frames:
            self.frames.inc(frames, tags=self.tags)
        for stage in run_stats.STAGES:
            values = [r.get(f"seconds_{stage}") for r in rows]
            if any(v is not None for v in values):
                spent, tags = sum(float(v or 0.0) for v in values), {**self.tags, "stage": stage}
                self.stage_seconds.observe(spent, tags=tags)
                if spent > 0:
                    self.seconds.inc(spent, tags=tags)
        self.counts["videos"] += 1
        self.counts["failed"] += status == "failed"
        self.counts["frames"] += frames

    def sample(self) -> None:
        """The gauges, from the dispatcher's queues (read, never changed)."""
        d = self._dispatcher
        if d is None:
            return
        busy, idle = float(getattr(d, "busy", 0.0)), float(getattr(d, "idle", 0.0))
        if busy + idle > 0:
            self.busy_share.set(busy / (busy + idle), tags=self.tags)
        self.waiting.set(d.groups.waiting(), tags=self.tags)
        self.precomputing.set(len(d.precomputes), tags=self.tags)
        self.remaining.set(len(d.waiting), tags=self.tags)
        self.alive.set(sum(bool(a) for a in d.editors.alive), tags=self.tags)

    def _sample_until_closed(self) -> None:
        said = False
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 - a gauge is never worth a run
                # The loop changes its queues while this thread reads them ("deque mutated during
                # iteration"): that sample is skipped, the next one is taken.
                if not said:
                    log.debug("a live metrics sample was skipped: %s", e)
                    said = True

    def devices(self) -> list[str]:
        """The devices the editors that answered report (`cpu`, `cuda:0`, ...)."""
        ready, _ = ray.wait(self._pings, num_returns=len(self._pings), timeout=0) if self._pings else ([], [])
        out = set()
        for ref in ready:
            try:
                out.add(str(ray.get(ref).get("device")))
            except Exception:  # noqa: BLE001 - an editor that died before it answered has no device to say
                continue
        return sorted(out)

    def close(self) -> None:
        """Stop sampling (after a last sample); keep what was seen for the run's stats."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.sample()
            devices = self.devices()
        except Exception:  # noqa: BLE001 - Ray is going down (Ctrl-C): the counts are still worth keeping
            devices = []
        _SEEN[self.run] = {**self.counts, "devices": devices}


def _cluster_devices(opts: Any, seen: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"editors": list(seen.get("devices", [])), "requested": opts.device or "auto"}
    out["precompute_gpus"] = opts.precompute_gpus
    if ray.is_initialized():
        resources = ray.cluster_resources()
        out["cluster_gpus"] = resources.get("GPU", 0)
        out["accelerators"] = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
    return out


def write_run_stats(
    opts: Any,
    *,
    settings: str,
    run: str,
    total: int,
    done_before: int,
    seconds: float,
    table: pa.Table | None = None,
    summary: Any = None,
    interrupted: bool = False,
) -> str | None:
    """OUTPUT/stats.json of the run whose token is `run` (atomic). `table`: its results table (None:
    read back from OUTPUT/results.parquet, as an interrupted run just wrote it); `summary`: its
    actors.runner.RunSummary (None when interrupted: the watcher's counts). Never raises: the stats
    are a report of the run, not part of its work. Returns the URL, or None when it failed."""
    seen = _SEEN.pop(run, {})
    try:
        if table is None:
            table = read_table(storage.join(opts.output, RESULTS), opts.storage)
        editors: dict[str, Any] = {}
        if summary is not None:
            frames = summary.frames
            editors = {
                "count": summary.editors,
                "gpus_each": summary.gpus_per_editor,
                "busy_share": None if summary.editor_idle_share is None else round(1 - summary.editor_idle_share, 4),
                "deaths": summary.editor_deaths,
                "calls": summary.editor_calls,
            }
        else:
            frames = int(seen.get("frames", 0))
        stats = run_stats.run_stats(
            table,
            total=total,
            settings=settings,
            seconds=seconds,
            frames=frames,
            done_before=done_before,
            interrupted=interrupted,
            editors=editors,
            devices=_cluster_devices(opts, seen),
            output=opts.output,
            run=run_tag(run),
            models={"diffusion": opts.model, "caption": opts.caption_model},
        )
        return run_stats.write_stats(stats, opts.output, opts.storage)
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("the run's stats.json could not be written (%s: %s)", type(e).__name__, e)
        return None
