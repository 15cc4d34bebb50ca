"""Soak test with faults: `pix2video run` over many tiny clips on a two-node local cluster while a chaos
loop kills what it can; then every output is checked against an undisturbed run of the same command.

    python benchmarks/soak.py --clips 300 --prompts 1 --chaos on --workdir toy-work/soak --json soak.json
    python benchmarks/soak.py --clips 300 --chaos off          # the undisturbed run alone (throughput)

The cluster: `ray.cluster_utils.Cluster` held by this process, a head and one worker node on 127.0.0.1,
each with 2 CPUs and 1 logical GPU, so there is one editor actor per node (the models run on the CPU).
The driver is `pix2video run --address <cluster>` in a process of its own (so a SIGTERM hits a real
driver), whose editors also save each unit's decoded frames before H.264 (tests/editors.py's
`keeping_frames`), so "the same frames" is the method's arithmetic, not the encoder's decisions.

With `--chaos on`, first the undisturbed run (output `reference/`), then the disturbed one (`chaos/`) on
the same cluster while the chaos loop, every `--interval` seconds on average once `--kill-every` more
units are done, SIGKILLs one of this cluster's editor or precompute worker processes (the two kinds in
turn, the process at random; found as the children of this cluster's raylets, by their Ray process
titles: never another cluster's), removes the worker node once without a goodbye (`--remove-at`) and
adds a fresh one, and SIGTERMs the driver once (`--sigterm-at`; exit 130 expected), after which the same
command is run again and must finish the rest.

Checked afterwards (`check_output`): every unit ok, one results row per unit, each mp4 there once and
no other file in videos/, one marker per unit, no temporary name (pipeline/io/atomic.py TEMP_NAME)
anywhere in the output tree, every mp4 decodes to all its frames, and each unit's frames before H.264
equal the undisturbed run's. Prints one JSON object (also written to --json after each phase, so a
stopped run keeps its figures): units/s without and with chaos (each phase's wall time, driver starts
included), kills by kind, node removals and additions, driver SIGTERMs and exit codes, editor deaths
the drivers saw, retries (attempts beyond the first in the results rows) and the checks.

--videos-per-call 1: a video retried after its editor died is edited alone, so with one video per call
a retry computes in the same UNet batch shapes as the undisturbed run and the frames are equal bit for
bit. (With two prompts, a retry of a video whose first prompt was already marked done edits the second
prompt alone: the batch shape changes and the frames may differ in the last grey level; the checks
then report the largest difference.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a watercolor painting", "{caption}, at night"]
FRAMES = 3
# The run's flags besides manifest, output and address. A video may die with its editor up to 5 times
# before it becomes a failed row (default 3): random kills at this rate hit the same video more often
# than a real cluster's deaths do, and a failed row here would be the retry limit working, not a fault.
RUN_FLAGS = ["--model", "tiny", "--size", "64x64", "--steps", "2", "--no-progress"]
RUN_FLAGS += ["--videos-per-call", "1", "--max-attempts", "5"]
# Ray's process titles (`ray::<actor class or task function>`) of the workers the chaos loop may kill: the
# editors are the frames-keeping subclass (or the product's class), the precompute tasks' function. An
# idle worker is `ray::IDLE`: a precompute kill always lands in a running task.
EDITOR_TITLES = ("ray::KeepingFrames", "ray::EditorActor")
PRECOMPUTE_TITLES = ("ray::precompute_video",)
MARKERS = "markers"
PATIENCE_S = 20.0


# --------------------------------------------------------------------------------------- the dataset


def write_dataset(folder: Path, clips: int, prompts: int) -> Path:
    """`clips` sample videos (64x64, 3 frames, one seed each) and a manifest giving each `prompts` prompts."""
    from fixtures.clips import write_sample_video

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(clips):
        name = f"clip-{i:04d}.mp4"
        if not (folder / name).exists():
            write_sample_video(folder / name, num_frames=FRAMES, width=64, height=64, seed=i)
        # A source prompt given: no captioning (the soak is about faults, not the caption model).
        row = {"video": name, "prompt": PROMPTS[:prompts], "source_prompt": "shapes on a gradient", "n": i}
        lines.append(json.dumps(row))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


# --------------------------------------------------------------------------------------- the cluster


def cluster_env(scratch: Path) -> dict[str, str]:
    """What every process of the cluster and the driver inherit: loopback, no token auth, this checkout
    importable, one torch thread, no network for models, and `scratch` as the temporary folder (the
    editors write each mp4 there first: what killed editors leave behind is counted)."""
    return {
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(scratch),
    }


NODE = dict(num_cpus=2, num_gpus=1, node_ip_address="127.0.0.1", include_dashboard=False)


class TwoNodes:
    """A head and a worker node (`ray.cluster_utils.Cluster`), the worker replaceable."""

    def __init__(self, ray_temp: str) -> None:
        from ray.cluster_utils import Cluster

        # Ray's own temp folder short: its socket paths have a length limit.
        self.cluster = Cluster(initialize_head=True, head_node_args=dict(temp_dir=ray_temp, **NODE))
        self.worker = self.cluster.add_node(**NODE)
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return self.cluster.address

    def replace_worker(self, pause: float) -> None:
        """The worker node dies as a preempted one does (no goodbye); `pause` s later a fresh one joins."""
        self.cluster.remove_node(self.worker, allow_graceful=False)
        time.sleep(pause)
        # Not waiting for it to register: the soak's loop (which SIGTERMs the driver) goes on meanwhile.
        self.worker = self.cluster.add_node(wait=False, **NODE)

    def workers(self, titles: tuple[str, ...]) -> list[int]:
        """Pids of this cluster's worker processes whose Ray title starts with one of `titles`."""
        import psutil
        from ray._private import ray_constants

        pids = []
        for node in self.cluster.list_all_nodes():
            for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []):
                try:
                    children = psutil.Process(info.process.pid).children()
                except psutil.NoSuchProcess:
                    continue
                for child in children:
                    try:
                        cmdline = child.cmdline()
                    except psutil.Error:
                        continue
                    if cmdline and cmdline[0].startswith(titles):
                        pids.append(child.pid)
        return pids

    def shutdown(self) -> None:
        self.cluster.shutdown()


# ---------------------------------------------------------------------------------------- the driver


def driver_command(manifest: Path, out: Path, frames: Path, address: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--driver", str(frames), "--", "run"] + [
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--address",
        address,
        *RUN_FLAGS,
    ]


def _driver(frames: str, argv: list[str]) -> int:
    """The driver process: `pix2video ARGV` whose editors also keep each unit's frames under `frames`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from editors import keeping_frames

    from actors import editor
    from jobs.cli import main

    editor.EditorActor = keeping_frames(Path(frames))  # Ray sends the subclass by value
    return main(argv)


def start_driver(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "a") as f:  # a file, not a pipe: nothing blocks on a full pipe
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            # A suite started in the background inherits SIGINT ignored: the driver gets the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def units_done(out: Path) -> int:
    try:
        return len(os.listdir(out / MARKERS))
    except FileNotFoundError:
        return 0


# ----------------------------------------------------------------------------------------- the chaos


class Chaos:
    """Called from the soak's main loop (`tick`; Ray starts a node's processes from the main thread
    only): SIGKILLs one editor or precompute worker every ~`interval` s (uniform in [0.5, 1.5] x) once at
    least `every` more units are done since the last kill, and once, when `remove_at` of the units are
    done, replaces the worker node. Paced by progress as well as time: on a loaded machine a fresh
    worker takes longer to start than `interval`, and kills by the clock alone then stop all progress
    (every precompute task killed until Ray's retries run out)."""

    def __init__(
        self,
        nodes: TwoNodes,
        out: Path,
        total: int,
        *,
        interval: float,
        every: int,
        remove_at: float,
        seed: int,
        log: Path,
    ) -> None:
        self.log, self.t0 = log, time.monotonic()
        self.nodes, self.out, self.total = nodes, out, total
        self.interval, self.every, self.remove_at = interval, every, remove_at
        self.last_kill_at = -every  # units done at the last kill: the first is due at once
        self.rng = random.Random(seed)
        self.pause = False  # while the driver is down between its SIGTERM and the rerun
        self.next_at = self._next()
        self.due_since: float | None = None  # a kill is due: since when
        self.kills = {"editor": 0, "precompute": 0}
        self.node_removals = self.node_additions = 0
        self.errors: list[str] = []

    def _next(self) -> float:
        return time.monotonic() + self.interval * self.rng.uniform(0.5, 1.5)

    def tick(self) -> None:
        """Whatever is due now."""
        if self.pause or time.monotonic() < self.next_at:
            return
        self.next_at = self._next()
        try:
            if not self.node_removals and units_done(self.out) >= self.remove_at * self.total:
                self.node_removals += 1
                self.note("worker node removed")
                self.nodes.replace_worker(pause=2.0)
                self.node_additions += 1
                self.note("fresh worker node added")
                return
            done = units_done(self.out)
            if done >= self.last_kill_at + self.every:
                self.due_since = self.due_since or time.monotonic()
                if self._kill_one():
                    self.last_kill_at, self.due_since = done, None
                else:
                    self.next_at = time.monotonic()  # try again at the next tick
        except Exception as e:  # noqa: BLE001 - the soak reports it; the run goes on
            self.errors.append(f"{type(e).__name__}: {e}")

    def _kill_one(self) -> bool:
        """SIGKILL a process of the kind killed less so far (so both kinds get hit: a precompute task is
        short, and at a given moment often none runs), of the other kind once none of the first has run
        for PATIENCE_S. True once one was killed."""
        # Precompute first on a tie: at the start of a run its tasks are running (loading their models).
        kinds = [("precompute", PRECOMPUTE_TITLES), ("editor", EDITOR_TITLES)]
        kinds.sort(key=lambda kind: self.kills[kind[0]])
        for n, (kind, titles) in enumerate(kinds):
            if n and time.monotonic() - (self.due_since or 0.0) < PATIENCE_S:
                return False
            pids = self.nodes.workers(titles)
            if pids and not self.pause:  # the driver may have been stopped since this tick began
                pid = self.rng.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.kills[kind] += 1
                    self.note(f"SIGKILL {kind} pid {pid}")
                    return True
                except ProcessLookupError:
                    pass
        return False

    def note(self, what: str) -> None:
        """One line per event in the chaos log: seconds since the start, units done, what."""
        with open(self.log, "a") as f:
            f.write(f"{time.monotonic() - self.t0:8.1f} s  {units_done(self.out):5d} done  {what}\n")


# ---------------------------------------------------------------------------------------- the phases


def run_undisturbed(cmd: list[str], out: Path, log: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = start_driver(cmd, log, env)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - t0
    return {"exit_codes": [code], "seconds": seconds, "units_done": units_done(out)}


def run_with_chaos(
    cmd: list[str],
    out: Path,
    log: Path,
    env: dict[str, str],
    nodes: TwoNodes,
    total: int,
    *,
    interval: float,
    every: int,
    remove_at: float,
    sigterm_at: float,
    seed: int,
    timeout: float,
) -> dict[str, Any]:
    """The disturbed run: the chaos loop on, the driver SIGTERMed once `sigterm_at` of the units are done,
    then run again until it exits."""
    chaos = Chaos(
        nodes,
        out,
        total,
        interval=interval,
        every=every,
        remove_at=remove_at,
        seed=seed,
        log=log.with_name("chaos-events.log"),
    )
    codes: list[int] = []
    sigtermed = threading.Event()
    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    proc = start_driver(cmd, log, env)

    def stop_driver_once() -> None:
        """Its own thread, polling often: the main loop is held for seconds while it replaces the node, and
        a quiet machine finishes the remaining clips in that time (the SIGTERM never came)."""
        while proc.poll() is None and not sigtermed.is_set():
            # Not at the very end: a SIGTERM that lands in the driver's own exit tests something else.
            if sigterm_at * total <= units_done(out) < total:
                chaos.pause = True  # no kills while the driver stops: they would land in its shutdown
                proc.send_signal(signal.SIGTERM)
                sigtermed.set()
                chaos.note("SIGTERM driver")
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_driver_once, daemon=True)
    watcher.start()
    try:
        while True:
            code = proc.poll()
            if code is not None:
                watcher.join()
                codes.append(code)
                chaos.note(f"driver exited {code}")
                if code == 130 and sigtermed.is_set() and len(codes) == 1:
                    proc = start_driver(cmd, log, env)  # the rerun: the same command
                    chaos.pause = False
                    continue
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                codes.append(-9)
                break
            chaos.tick()
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # stopped from outside (Ctrl-C): no driver outlives the soak
            proc.kill()
            proc.wait()
        watcher.join()
    seconds = time.perf_counter() - t0
    return {
        "exit_codes": codes,
        "seconds": seconds,
        "units_done": units_done(out),
        "kills": chaos.kills,
        "node_removals": chaos.node_removals,
        "node_additions": chaos.node_additions,
        "driver_sigterms": int(sigtermed.is_set()),
        "chaos_errors": chaos.errors,
    }


# ---------------------------------------------------------------------------------------- the checks


def temporaries(folder: Path) -> list[str]:
    """Every name under `folder` that is an atomic write's temporary (files and folders)."""
    from pipeline.io.atomic import TEMP_NAME

    found = []
    for dirpath, dirs, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(dirpath, n), folder) for n in dirs + files if TEMP_NAME.match(n)]
    return sorted(found)


def check_output(out: Path, frames: Path, ref_frames: Path | None, units: int) -> dict[str, Any]:
    """What a finished output must be (see the module's docstring); every figure is a count of faults
    except `rows` and `frames_equal`."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.io.video import read_frames

    rows = pq.read_table(out / "results.parquet").to_pylist()
    keys = [(r["n"], r["prompt"]) for r in rows]
    outputs = [Path(r["output"]).name for r in rows if r["output"]]
    videos = sorted(os.listdir(out / "videos")) if (out / "videos").is_dir() else []
    markers = sorted(os.listdir(out / MARKERS)) if (out / MARKERS).is_dir() else []
    undecodable = 0
    for name in videos:
        try:
            if read_frames(str(out / "videos" / name)).frames.shape[0] != FRAMES:
                undecodable += 1
        except Exception:  # noqa: BLE001 - a partial mp4: counted
            undecodable += 1
    bad_markers = 0
    for name in markers:
        try:
            json.loads((out / MARKERS / name).read_text())
        except ValueError:
            bad_markers += 1
    frames_equal, frames_missing, differ = 0, 0, []
    if ref_frames is not None:
        for r in rows:
            if not r["output"]:
                continue
            stem = Path(r["output"]).stem
            try:
                a, b = np.load(frames / f"{stem}.npy"), np.load(ref_frames / f"{stem}.npy")
            except (OSError, ValueError):
                frames_missing += 1
                continue
            if a.shape == b.shape and np.array_equal(a, b):
                frames_equal += 1
            else:
                diff = np.abs(a.astype(np.int16) - b) if a.shape == b.shape else np.array([255])
                # attempts: editor deaths this unit saw in the run that finished it, plus one
                differ.append(
                    {"unit": stem, "attempts": r["attempts"], "max": int(diff.max()), "values": int((diff > 0).sum())}
                )
    return {
        "rows": len(rows),
        "rows_not_ok": sum(r["status"] != "ok" for r in rows),
        "rows_missing": units - len(set(keys)),
        "rows_twice": len(keys) - len(set(keys)),
        "outputs_twice": len(outputs) - len(set(outputs)),
        "videos_not_in_table": len(set(videos) - set(outputs)),
        "table_outputs_missing": len(set(outputs) - set(videos)),
        "markers_off": abs(len(markers) - units) + bad_markers,
        "temporaries": temporaries(out),
        "undecodable_mp4": undecodable,
        "frames_equal": frames_equal,
        "frames_differ": len(differ) if ref_frames is not None else None,
        "frames_max_diff": max([d["max"] for d in differ], default=0),
        "frames_differ_units": differ[:50],
        "frames_missing": frames_missing,
        "retries": sum(max(0, int(r["attempts"] or 1) - 1) for r in rows),
    }


def faults(checks: dict[str, Any]) -> list[str]:
    """The names of the checks that found something (empty: the output is what it must be)."""
    zero = ["rows_not_ok", "rows_missing", "rows_twice", "outputs_twice", "videos_not_in_table"]
    zero += ["table_outputs_missing", "markers_off", "undecodable_mp4", "frames_missing"]
    found = [k for k in zero if checks[k]]
    if checks["temporaries"]:
        found.append("temporaries")
    if checks["frames_differ"]:
        found.append("frames_differ")
    return found


def editor_deaths(log: Path) -> int:
    """Editor deaths the drivers logged (`editor N died while editing ...`)."""
    return len(re.findall(r"editor \d+ died while editing", log.read_text())) if log.exists() else 0


def leftovers(scratch: Path) -> int:
    """Temporary folders the editors' mp4s were written in that no one removed (killed editors')."""
    return len([n for n in os.listdir(scratch) if n.startswith("pix2video-")]) if scratch.is_dir() else 0


# ------------------------------------------------------------------------------------------- the soak


def soak(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    scratch = work / "scratch"
    (scratch / "ray").mkdir(parents=True, exist_ok=True)  # Ray writes its cluster address file there
    os.environ.update(cluster_env(scratch))  # before the cluster starts: its processes inherit it
    from fixtures.tiny import tiny_model_dir

    tiny_model_dir()  # built once here, so no worker races to build it
    manifest = write_dataset(work / "data", args.clips, args.prompts)
    units = args.clips * args.prompts
    figures: dict[str, Any] = {
        "clips": args.clips,
        "prompts": args.prompts,
        "units": units,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "flags": RUN_FLAGS,
    }

    def record() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")

    ray_temp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    t0 = time.perf_counter()
    nodes = TwoNodes(ray_temp)
    figures["seconds_cluster_start"] = round(time.perf_counter() - t0, 1)
    try:
        ref = work / "reference"
        env = {**os.environ}
        cmd = driver_command(manifest, ref, work / "frames-reference", nodes.address)
        phase = run_undisturbed(cmd, ref, work / "reference.log", env, args.timeout)
        phase["units_per_s"] = round(units / phase["seconds"], 3)
        phase["editor_deaths"] = editor_deaths(work / "reference.log")
        phase["checks"] = check_output(ref, work / "frames-reference", None, units)
        phase["faults"] = faults(phase["checks"])
        figures["without_chaos"] = phase
        record()
        if args.chaos == "on":
            out = work / "chaos"
            cmd = driver_command(manifest, out, work / "frames-chaos", nodes.address)
            before = leftovers(scratch)
            phase = run_with_chaos(
                cmd,
                out,
                work / "chaos.log",
                env,
                nodes,
                units,
                interval=args.interval,
                every=args.kill_every,
                remove_at=args.remove_at,
                sigterm_at=args.sigterm_at,
                seed=args.seed,
                timeout=args.timeout,
            )
            phase["units_per_s"] = round(units / phase["seconds"], 3)
            phase["editor_deaths"] = editor_deaths(work / "chaos.log")
            phase["scratch_leftovers"] = leftovers(scratch) - before
            phase["checks"] = check_output(out, work / "frames-chaos", work / "frames-reference", units)
            phase["faults"] = faults(phase["checks"])
            figures["with_chaos"] = phase
            figures["throughput_ratio"] = round(phase["units_per_s"] / figures["without_chaos"]["units_per_s"], 3)
            record()
    finally:
        nodes.shutdown()
        import shutil

        shutil.rmtree(ray_temp, ignore_errors=True)
    return figures


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--prompts", type=int, default=1, choices=[1, 2])
    p.add_argument("--chaos", choices=["on", "off"], default="on")
    p.add_argument("--workdir", default=str(ROOT / "toy-work" / "soak"))
    p.add_argument("--json", help="also write the figures here (after each phase)")
    p.add_argument("--interval", type=float, default=6.0, help="mean seconds between kills (default %(default)g)")
    p.add_argument("--kill-every", type=int, default=3, help="units done between two kills (default %(default)s)")
    p.add_argument("--remove-at", type=float, default=0.2, help="share of units done when the node goes")
    p.add_argument("--sigterm-at", type=float, default=0.5, help="share of units done when the driver is stopped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per phase before the driver is killed")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run as a file: the checkout's packages
    if sys.argv[1:2] == ["--driver"]:
        sys.exit(_driver(sys.argv[2], sys.argv[4:]))
    print(json.dumps(soak(parse(sys.argv[1:])), indent=2))
