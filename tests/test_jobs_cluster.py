"""Clusters of their own: a job submitted to `ray start --head` through `pix2video submit`, and a two-node
cluster (`ray.cluster_utils.Cluster`) that loses its worker node mid-run.

Both run in processes of their own (a driver can be attached to one cluster only, and the session's
cluster stays up for the other tests); everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """Environment for the clusters we start: loopback only, no token auth, this checkout importable,
    this virtualenv's `python` first on PATH (what a job's entrypoint runs)."""
    return {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's switch that binds a single machine to loopback
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TQDM_DISABLE": "1",
    }


def _write_dataset(folder: Path, videos: int, frames: int = 3) -> Path:
    from fixtures.clips import write_sample_video

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(videos):
        write_sample_video(folder / f"clip-{i}.mp4", num_frames=frames, width=64, height=64, seed=i)
        lines.append(json.dumps({"video": f"clip-{i}.mp4", "prompt": "a watercolor painting", "n": i}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group we started (its leader may be gone, Ray's processes not), then SIGKILL
    what is left: Ray drains for up to 30 s otherwise."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=30)


@contextlib.contextmanager
def ray_head() -> Iterator[tuple[str, str]]:
    """`ray start --head` on 127.0.0.1 (every port chosen, the dashboard on), for `pix2video submit`;
    yields its dashboard's URL, once it answers, and its temp folder (Ray's session folders, which
    every process of the cluster keeps files open in). tests/test_loopback.py lists what it listens on."""
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard = _free_port()
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(_free_port()),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--include-dashboard",
            "true",
            "--ray-client-server-port",
            str(_free_port()),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--num-cpus",
            "2",
            "--temp-dir",
            temp_dir,
            "--disable-usage-stats",
        ],
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.5)
        yield url, temp_dir
    finally:
        _stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_to_ray_start_head(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import main as cli

    manifest = _write_dataset(tmp_path / "data", videos=2)
    out = tmp_path / "out"
    with ray_head() as (url, _):
        rc = cli(
            [
                "submit",
                "--address",
                url,
                "--wait",
                "--working-dir",
                str(ROOT),
                "--",
                "run",
                "--manifest",
                str(manifest),
                "--output",
                str(out),
                "--model",
                "tiny",
                "--size",
                "64x64",
                "--steps",
                "2",
                "--no-progress",
            ]
        )
        printed = capsys.readouterr().out
        assert rc == 0, printed
        assert "SUCCEEDED" in printed and "2 of 2 videos x prompts ok" in printed
        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert [(r["n"], r["status"]) for r in rows] == [(0, "ok"), (1, "ok")]


TWO_NODES = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    from pipeline.dataset.manifest import load_manifest
    from actors.runner import RunOptions, run_dataset
    from pipeline.dataset.storage import StorageOptions
    from pipeline.method.editor import EditConfig

    manifest_path, out = sys.argv[1], sys.argv[2]
    common = dict(node_ip_address="127.0.0.1", include_dashboard=False)
    # One logical GPU per node, so there is one editor per node; the worker's will be lost.
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, num_gpus=1, **common))
    worker = cluster.add_node(num_cpus=2, num_gpus=1, **common)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()

    markers, lost = os.path.join(out, "markers"), os.path.join(os.path.dirname(out), "worker-removed")

    def a_unit_is_done():
        return os.path.isdir(markers) and bool(os.listdir(markers))

    def lose_worker():
        while not a_unit_is_done():
            time.sleep(0.1)
        cluster.remove_node(worker, allow_graceful=False)  # as a preempted node: no goodbye
        print("removed worker node", flush=True)
        open(lost, "w").close()

    from actors import editor

    # Holds every output after the run's first until the worker node is gone: on an idle machine the run
    # otherwise finished all six videos while the node was being removed (the loss came after the run).
    class WaitingForTheLoss(editor.EditorActor):
        def _put_output(self, local, url):
            deadline = time.monotonic() + 120
            while a_unit_is_done() and not os.path.exists(lost) and time.monotonic() < deadline:
                time.sleep(0.05)
            super()._put_output(local, url)

    editor.EditorActor = WaitingForTheLoss  # the class is sent to the editors by value (defined here)

    threading.Thread(target=lose_worker, daemon=True).start()
    opts = RunOptions(output=out, model="tiny", caption_model="tiny", config=EditConfig(steps=2),
                      size=(64, 64), progress=False)
    summary = run_dataset(load_manifest(manifest_path, StorageOptions()), opts)
    print("SUMMARY " + json.dumps(dict(ok=summary.ok, failed=summary.failed, editors=summary.editors,
                                         deaths=summary.editor_deaths)), flush=True)
    # No graceful shutdown: after a lost node it can hang; the test ends the whole process group.
    os._exit(0)
    """
)


def test_two_node_cluster_loses_worker_node(tiny_model_dir: Path, tmp_path: Path) -> None:
    manifest = _write_dataset(tmp_path / "data", videos=6)
    out = tmp_path / "out"
    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES)
    log_path = tmp_path / "two_nodes.log"
    with open(log_path, "w") as log_file:  # a file, not a pipe: Ray's processes inherit it and live on
        proc = subprocess.Popen(
            [sys.executable, str(script), str(manifest), str(out)],
            cwd=ROOT,
            env=_env(),
            start_new_session=True,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            returncode = proc.wait(timeout=300)
        finally:
            _stop_group(proc)
    log = log_path.read_text()
    assert returncode == 0, log[-4000:]
    assert "removed worker node" in log and log.index("removed worker node") < log.index("SUMMARY"), log[-4000:]
    summary = json.loads(log.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["editors"] == 2 and summary["ok"] == 6 and summary["failed"] == 0, log[-4000:]
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["n"] for r in rows] == list(range(6)) and all(r["status"] == "ok" for r in rows)
    videos = sorted(os.listdir(out / "videos"))
    assert len(videos) == 6 and not any(v.startswith(".") for v in videos)
