"""Benchmark of the dataset pipeline on Ray against the same work in one process; prints figures.

    python benchmarks/dataset_bench.py                 # 8 videos, tiny model (a few minutes on 2 cores)
    python benchmarks/dataset_bench.py --videos 8 --frames 16 --size 128 --steps 20 --k 4

Three figures (BENCHMARKS.md records them with the machine they came from):

1. Ray overhead: wall time of `pix2video run` over N generated videos against the same editing done
   in one process without Ray (decode, resize, depth, caption, invert, edit, encode, in a loop). Both
   are fresh processes timed from outside, so imports and model loading count on both sides; the run's
   own figure without starting Ray is reported too.
2. Editor idle share once warm: the share of the editor actors' time, after their first video, spent
   waiting for work (precompute not ready) rather than editing. From the run's summary line.
3. K prompts of one video in one run against K runs of one prompt each (separate outputs, so nothing is
   shared): total inversion seconds and wall time. One run inverts once; K runs invert K times.

Only public entry points are used: the `pix2video` command (`python -m jobs.cli`) and `pipeline`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(threads: int | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.setdefault("PIX2VIDEO_CACHE", str(Path(tempfile.gettempdir()) / "pix2video-bench-cache"))
    env.setdefault("HF_HUB_OFFLINE", "1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def make_dataset(folder: Path, videos: int, frames: int, size: int, prompts: list[str]) -> Path:
    from fixtures.clips import write_sample_video

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(videos):
        write_sample_video(folder / f"clip-{i}.mp4", num_frames=frames, width=size, height=size, seed=i)
        lines.append(json.dumps({"video": f"clip-{i}.mp4", "prompt": prompts}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def baseline(manifest: str, output: str, size: int, steps: int, threads: int) -> None:
    """The same editing as `pix2video run`, in this process, one video after the other, no Ray."""
    import torch

    torch.set_num_threads(threads)
    from pipeline.io.frames import resize_frames
    from pipeline.io.video import read_frames, write_video
    from pipeline.method.editor import EditConfig, Pix2Video
    from pipeline.models.caption import Captioner
    from pipeline.models.depth import DepthEstimator
    from pipeline.models.loading import load_diffusion_models, resolve_model

    models = load_diffusion_models(resolve_model("tiny"), device="cpu")
    editor = Pix2Video(models)
    depth_model = DepthEstimator.from_model("tiny", device="cpu")
    captioner = Captioner.from_model("tiny", device="cpu")
    config = EditConfig(steps=steps)
    folder = Path(manifest).parent
    os.makedirs(output, exist_ok=True)
    for n, line in enumerate(Path(manifest).read_text().splitlines()):
        row = json.loads(line)
        frames = resize_frames(read_frames(str(folder / row["video"])).frames, size, size)
        depth = depth_model(frames)
        source = captioner(frames[:1])[0]
        video = editor.prepare(frames, list(depth))
        zT = editor.invert(video, source, config)
        for k, (latents) in enumerate(editor.edit(video, zT, row["prompt"], config)):
            write_video(os.path.join(output, f"{n}-{k}.mp4"), editor.decode(latents), 8.0, width=size, height=size)


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def _run_cmd(manifest: Path, out: Path, a: argparse.Namespace, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.cli",
        "run",
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--model",
        "tiny",
        "--size",
        f"{a.size}x{a.size}",
        "--steps",
        str(a.steps),
        "--address",
        "local",
        "--no-progress",
        *extra,
    ]


def _summary(stdout: str) -> dict[str, float]:
    m = re.search(r"in ([\d.]+) s, ([\d.]+) frames/s(?:, editors idle ([\d.]+)% once warm)?", stdout)
    if not m:
        return {}
    return {
        "run_seconds": float(m.group(1)),
        "frames_per_second": float(m.group(2)),
        "editor_idle_percent": float(m.group(3)) if m.group(3) else float("nan"),
    }


def _stage_totals(out: Path) -> dict[str, float]:
    import pyarrow.parquet as pq

    t = pq.read_table(out / "results.parquet")
    return {c: round(sum(t.column(c).to_pylist()), 3) for c in t.column_names if c.startswith("seconds_")}


# -- driver scale (issue 24, item 4): no Ray started, no video decoded --------------------------------

SCALE_PROMPT = "a watercolor painting"


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process, in MB."""
    import resource

    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return round(current, 1), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _scale_options(output: str, storage_opts: object = None):  # noqa: ANN202 - RunOptions, imported late
    from pipeline.dataset.storage import StorageOptions
    from pipeline.method.config import EditConfig
    from pipeline.stages.options import RunOptions

    return RunOptions(
        output=output,
        model="tiny",
        caption_model="tiny",
        config=EditConfig(),
        progress=False,
        storage=storage_opts or StorageOptions(),
        shots="off",
    )


SCALE_RUN = "0" * 32  # the run token in the setup's markers


def _marker_row(key: str, i: int, output: str) -> dict:
    """A finished unit's row as the editor returns it to the driver (with its key)."""
    from pipeline.dataset import resume
    from pipeline.dataset.tables import ResultRow

    return ResultRow(
        key=key,
        id=f"clip-{i:07d}",
        video=f"clips/clip-{i:07d}.mp4",
        prompt=SCALE_PROMPT,
        source_prompt="a toy scene",
        status="ok",
        output=resume.output_url(output, key),
        num_frames=16,
        fps=8.0,
        width=64,
        height=64,
        shots=[0],
        shot_source_prompts=["a toy scene"],
        shot_prompts=[SCALE_PROMPT],
        anchor_refresh=0,
        attempts=1,
        group_size=1,
        seconds_edit=1.5,
    ).as_dict()


def _marker_blob(key: str, i: int, output: str, settings: str) -> bytes:
    """A finished unit's marker as the editor writes it (its results row, the settings, the run)."""
    from pipeline.dataset import resume

    return resume.marker_bytes(_marker_row(key, i, output), settings, SCALE_RUN)


def scale_setup(folder: Path, units: int) -> None:
    """A manifest of `units` rows (one prompt each, one label column) and, for every other unit, its
    marker and an (empty) mp4, as a half-finished run leaves them. Not timed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.dataset import resume
    from pipeline.dataset.manifest import unit_key

    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"clip-{i:07d}" for i in range(units)]
    table = pa.table(
        {
            "id": ids,
            "video": [f"clips/{i}.mp4" for i in ids],
            "prompt": [SCALE_PROMPT] * units,
            "label": [i % 7 for i in range(units)],
        }
    )
    pq.write_table(table, folder / "manifest.parquet")
    out = folder / "out"
    (out / resume.MARKERS).mkdir(parents=True, exist_ok=True)
    (out / resume.VIDEOS).mkdir(parents=True, exist_ok=True)
    settings = _scale_options(str(out)).fingerprint()
    for i in range(0, units, 2):
        key = unit_key(ids[i], SCALE_PROMPT)
        (out / resume.MARKERS / f"{key}.json").write_bytes(_marker_blob(key, i, str(out), settings))
        (out / resume.VIDEOS / f"{key}.mp4").touch()


class _Phases:
    """Seconds and peak RSS after each wrapped driver step (wrapped where actors.runner calls it)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rss: dict[str, float] = {}

    def wrap(self, name: str, fn):  # noqa: ANN001, ANN202
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)
                self.rss[name] = _rss_mb()[1]

        return timed


def scale_measure(
    manifest_url: str, output: str, storage_opts: object = None, settings: str | None = None
) -> dict[str, object]:
    """Load, plan, scan and write the table of a half-finished run, through actors.runner's own driver
    path with the Ray part (`_drive`) replaced by editors that fail every pending unit at once: what
    is left is driver time. In a fresh process, so the peak RSS is this run's."""
    import actors.runner as runner
    from actors.dispatch import Outcome
    from pipeline.dataset import resume
    from pipeline.dataset.manifest import load_manifest
    from pipeline.dataset.tables import Rows
    from pipeline.stages.edit import failed_row

    opts = _scale_options(output, storage_opts)
    if settings is not None:  # the setup's settings: its markers stay done when the fingerprint's fields change
        opts.fingerprint = lambda: settings
    figures: dict[str, object] = {"rss_after_imports_mb": _rss_mb()[0]}
    phases = _Phases()
    t0 = time.perf_counter()
    manifest = load_manifest(manifest_url, opts.storage, output=output)
    phases.seconds["load_manifest"] = round(time.perf_counter() - t0, 3)
    phases.rss["load_manifest"] = _rss_mb()[1]
    fake = {"seconds": 0.0}

    def drive(jobs, _opts, _token):  # noqa: ANN001, ANN202 - the editors, as fast as they can fail
        t = time.perf_counter()
        rows = Rows()  # as the dispatcher collects them, one video at a time
        for job in jobs:
            for u in job.units:
                row = failed_row(u, None, "benchmark: not edited")
                rows.add(row.pop("key"), row)
        fake["seconds"] = time.perf_counter() - t
        return Outcome(rows=rows)

    patches = {
        "_drive": drive,
        "build_table": phases.wrap("build_table", runner.build_table),
        "write_table": phases.wrap("write_table", runner.write_table),
        "previous_scores": phases.wrap("previous_scores", runner.previous_scores),
        "alive_nodes": lambda: 1,  # no Ray to ask: one node
    }
    saved = {name: getattr(runner, name) for name in patches}
    saved_resume = {n: getattr(resume, n) for n in ("done_rows",)}
    saved_temps = runner.storage.remove_stale_temporaries
    try:
        for name, fn in patches.items():
            setattr(runner, name, fn)
        resume.done_rows = phases.wrap("scan_done", resume.done_rows)
        runner.storage.remove_stale_temporaries = phases.wrap("stale_temporaries", saved_temps)
        t0 = time.perf_counter()
        summary = runner.run_dataset(manifest, opts)
        total = time.perf_counter() - t0 - fake["seconds"]
    finally:
        for name, fn in saved.items():
            setattr(runner, name, fn)
        for name, fn in saved_resume.items():
            setattr(resume, name, fn)
        runner.storage.remove_stale_temporaries = saved_temps
    named = sum(v for k, v in phases.seconds.items() if k != "load_manifest")
    phases.seconds["plan"] = round(total - named, 3)  # pending units, grouping, summary: the rest
    driver = phases.seconds["load_manifest"] + total
    units = len(manifest.units)
    figures.update(
        units=units,
        done_before=summary.skipped,
        table_rows=summary.ok + summary.failed,
        seconds=phases.seconds,
        peak_rss_mb_after=phases.rss,
        driver_seconds=round(driver, 3),
        ms_per_unit=round(1000 * driver / units, 4),
        fake_editor_seconds=round(fake["seconds"], 3),
        peak_rss_mb=_rss_mb()[1],
    )
    return figures


S3_INDEX = ("none", "indexed", "crashed")  # what index the object store holds beside the markers


def _moto_serve(port: int, bucket: str, units: int, settings: str, ready: str, index: str = "none") -> None:
    """A moto S3 server on 127.0.0.1 (its own process: its CPU is not the driver's) holding a
    half-finished run's markers and mp4s, put straight into moto's store (not timed). `index`: none
    (a run older than the markers index, or one whose index was deleted), indexed (the one file an
    earlier scan leaves), crashed (the parts a run's driver writes as units finish, resume.IndexWriter,
    1000 markers a part; killed before its last part: the last 999 to 1998 markers are in no part)."""
    from moto.server import ThreadedMotoServer

    from pipeline.dataset import resume
    from pipeline.dataset.manifest import unit_key
    from pipeline.dataset.storage import StorageOptions

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    from moto.s3.models import s3_backends

    backend = next(iter(s3_backends.values()))["global"]
    out = f"s3://{bucket}/out"

    def put(url: str, data: bytes, _opts: object = None):  # noqa: ANN202 - straight into moto's store
        return backend.put_object(bucket, url.removeprefix(f"s3://{bucket}/"), data)

    # The driver's writer, as a run uses it, its PUTs made straight into the store.
    resume.storage.write_bytes = put
    writer = resume.IndexWriter(out, settings, SCALE_RUN, StorageOptions(), every=1000, seconds=float("inf"))
    table: dict[str, list] = {"name": [], "tag": [], "blob": []}
    for i in range(0, units, 2):
        key = unit_key(f"clip-{i:07d}", SCALE_PROMPT)
        row = _marker_row(key, i, out)
        blob = resume.marker_bytes(row, settings, SCALE_RUN)
        obj = put(resume.marker_url(out, key), blob)
        put(resume.output_url(out, key), b"")
        if index == "crashed" and i < units - 2 * 999:  # the run was killed with 999 markers not indexed yet
            writer.add([row])
        table["name"].append(f"{key}.json")
        table["tag"].append(f"{obj.etag}:{len(blob)}")  # as resume._list_markers reads it from a listing
        table["blob"].append(blob)
    if index == "crashed" and not writer.written:
        sys.exit("the run leaves no index part at this size: give more units")
    if index == "indexed":  # as an earlier scan of this output left it
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.table(table), buf)
        put(f"{out}/{resume.INDEX}", buf.getvalue())
    indexed = 1000 * writer.written  # the rows still in the writer's buffer died with the run
    Path(ready).write_text(json.dumps({"index_parts": writer.written, "unindexed": len(table["name"]) - indexed}))
    while True:
        time.sleep(3600)


def scale_s3(folder: Path, units: int, index: str = "none") -> dict[str, object]:
    """`scale_measure` with the output on a moto S3 server (the manifest stays on local disk); the
    markers read one by one (GETs) are counted."""
    import socket

    from pipeline.dataset import storage
    from pipeline.dataset.storage import parse_storage_options

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = folder / "moto-ready"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    settings = _scale_options("s3://scale/out").fingerprint()
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r});"
        f"import dataset_bench as b; b._moto_serve({port}, 'scale', {units}, {settings!r}, {str(ready)!r}, {index!r})"
    )
    server = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        t0 = time.perf_counter()
        while not ready.exists() or not ready.read_text():
            if server.poll() is not None:
                sys.exit("the moto server stopped")
            time.sleep(0.5)
        setup = time.perf_counter() - t0
        os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
        opts = parse_storage_options(endpoint_url=f"http://127.0.0.1:{port}")
        fs, _ = storage.filesystem("s3://scale/out", opts)  # fsspec's cached instance: the scan's own
        cat, gets = fs.cat, [0]

        def counting(paths, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            gets[0] += sum("/markers/" in p for p in ([paths] if isinstance(paths, str) else paths))
            return cat(paths, *a, **k)

        fs.cat = counting
        from pipeline.dataset import resume

        parts = _Phases()  # where the scan's time goes: listing, reading the index, GETs, writing the index
        for name in ("_list_markers", "_read_index", "_write_index"):
            setattr(resume, name, parts.wrap(name, getattr(resume, name)))
        fs.cat = parts.wrap("cat", fs.cat)
        figures = scale_measure(str(folder / "manifest.parquet"), "s3://scale/out", opts)
        figures.update(json.loads(ready.read_text()), marker_gets=gets[0], index_before=index)
        figures["scan_seconds"] = dict(parts.seconds)
        figures["moto_setup_seconds"] = round(setup, 1)
        if index != "none":
            return figures
        # Again, on the same store: the first scan left OUTPUT/markers-index.parquet, so this one lists
        # the markers and reads none of them again.
        gets[0] = 0
        figures["rerun"] = scale_measure(str(folder / "manifest.parquet"), "s3://scale/out", opts)
        figures["rerun"]["marker_gets"] = gets[0]
        return figures
    finally:
        server.terminate()
        server.wait()


def scale_main(
    sizes: list[int], work: Path, out: Path, s3: list[int], s3_indexed: list[int] = (), s3_crashed: list[int] = ()
) -> None:
    """Each size in two fresh processes (setup, then measure), one after the other; one JSON line per
    measurement appended to `out` as it is made, so a stopped run keeps its figures."""
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    env = _env(threads=1)
    jobs = [(n, "local") for n in sizes] + [(n, "s3") for n in s3] + [(n, "s3-indexed") for n in s3_indexed]
    jobs += [(n, "s3-crashed") for n in s3_crashed]
    for n, where in jobs:
        folder = work / f"scale-{n}"
        if not (folder / "manifest.parquet").exists():
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, __file__, "--scale-child", "setup", str(n), str(folder)], env=env, check=True
            )
            print(f"setup {n}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--scale-child", where, str(n), str(folder)],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"{where} {n} failed:\n{proc.stderr[-3000:]}")
        figures = {"machine": machine, "output": where, **json.loads(proc.stdout.strip().splitlines()[-1])}
        with out.open("a") as f:
            f.write(json.dumps(figures) + "\n")
        print(json.dumps(figures), flush=True)


def scale_child(what: str, units: int, folder: Path) -> None:
    import logging

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    if what == "setup":
        scale_setup(folder, units)
        return
    if what in ("s3", "s3-indexed", "s3-crashed"):
        figures = scale_s3(folder, units, {"s3": "none", "s3-indexed": "indexed", "s3-crashed": "crashed"}[what])
    else:
        out = folder / "out"
        (out / "results.parquet").unlink(missing_ok=True)  # each measurement starts from the same state
        marker = next((out / "markers").iterdir())  # the settings the setup's markers were made with
        settings = json.loads(marker.read_bytes())["settings"]
        figures = scale_measure(str(folder / "manifest.parquet"), str(out), settings=settings)
    print(json.dumps(figures))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--k", type=int, default=4, help="prompts for figure 3")
    p.add_argument("--baseline", nargs=2, metavar=("MANIFEST", "OUTPUT"), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the one-process baseline")
    p.add_argument("--scale", nargs="*", type=int, metavar="UNITS", help="driver scale: manifests of these sizes")
    p.add_argument("--scale-s3", nargs="*", type=int, default=[], metavar="UNITS", help="the same, output on moto S3")
    p.add_argument("--scale-s3-indexed", nargs="*", type=int, default=[], metavar="UNITS", help="the same, rerun")
    p.add_argument(
        "--scale-s3-crashed", nargs="*", type=int, default=[], metavar="UNITS", help="the same, after a killed run"
    )
    p.add_argument("--work", type=Path, help="where --scale builds its manifests and outputs")
    p.add_argument("--results", type=Path, default=Path("scale.jsonl"), help="--scale's JSON lines")
    p.add_argument("--scale-child", nargs=3, metavar=("WHAT", "UNITS", "FOLDER"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.scale_child:
        scale_child(a.scale_child[0], int(a.scale_child[1]), Path(a.scale_child[2]))
        return
    if a.scale is not None or a.scale_s3 or a.scale_s3_indexed or a.scale_s3_crashed:
        work = a.work or Path(tempfile.mkdtemp(prefix="pix2video-scale-"))
        scale_main(a.scale or [], work, a.results, a.scale_s3, a.scale_s3_indexed, a.scale_s3_crashed)
        return
    if a.baseline:
        baseline(a.baseline[0], a.baseline[1], a.size, a.steps, a.threads)
        return

    work = Path(tempfile.mkdtemp(prefix="pix2video-bench-"))
    env = _env()
    subprocess.run(
        [sys.executable, "-c", "from pipeline.models.loading import resolve_model; resolve_model('tiny')"],
        cwd=ROOT,
        env=env,
        check=True,
    )  # build the tiny models outside every timing
    manifest = make_dataset(work / "data", a.videos, a.frames, a.size, ["a watercolor painting"])
    figures: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
        "work": f"{a.videos} videos x {a.frames} frames at {a.size}x{a.size}, 1 prompt, tiny model, {a.steps} steps",
    }

    # 1 and 2: overhead and idle share.
    # One torch thread: the editor actor gets one (its one CPU), and on small machines torch's
    # spinning threads make more of them slower, not faster (tests/conftest.py measured 5x on 2 cores).
    wall, _ = _timed(
        [
            sys.executable,
            __file__,
            "--baseline",
            str(manifest),
            str(work / "base"),
            "--size",
            str(a.size),
            "--steps",
            str(a.steps),
            "--threads",
            str(a.threads),
        ],
        env,
    )
    figures["one_process_seconds"] = round(wall, 2)
    wall, stdout = _timed(_run_cmd(manifest, work / "ray", a, "--num-cpus", str(os.cpu_count() or 2)), env)
    figures["ray_run_seconds"] = round(wall, 2)
    figures.update(_summary(stdout))
    figures["ray_stage_seconds"] = _stage_totals(work / "ray")
    best = figures["one_process_seconds"]
    figures["ray_overhead_percent"] = round(100 * (wall / best - 1), 1)
    figures["ray_overhead_percent_without_ray_start"] = round(100 * (figures["run_seconds"] / best - 1), 1)

    # 3: K prompts of one video.
    prompts = [f"a painting, style {i}" for i in range(a.k)]
    one = make_dataset(work / "one", 1, a.frames, a.size, prompts)
    wall_k, stdout = _timed(_run_cmd(one, work / "k-prompts", a), env)
    k_run = _summary(stdout)
    k_stage = _stage_totals(work / "k-prompts")
    sep_wall = sep_run = sep_invert = sep_edit = 0.0
    for i, prompt in enumerate(prompts):
        single = make_dataset(work / f"single-{i}", 1, a.frames, a.size, [prompt])
        w, stdout = _timed(_run_cmd(single, work / f"single-out-{i}", a), env)
        sep_wall += w
        sep_run += _summary(stdout).get("run_seconds", 0.0)
        st = _stage_totals(work / f"single-out-{i}")
        sep_invert += st["seconds_invert"]
        sep_edit += st["seconds_edit"]
    figures["k_prompts"] = {
        "k": a.k,
        "one_run": {
            "wall": round(wall_k, 2),
            "run_seconds": k_run.get("run_seconds"),
            "invert_seconds": k_stage["seconds_invert"],
            "edit_seconds": k_stage["seconds_edit"],
        },
        "k_runs": {
            "wall": round(sep_wall, 2),
            "run_seconds": round(sep_run, 2),
            "invert_seconds": round(sep_invert, 3),
            "edit_seconds": round(sep_edit, 3),
        },
    }
    print(json.dumps(figures, indent=2))
    print(f"(work folder: {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
