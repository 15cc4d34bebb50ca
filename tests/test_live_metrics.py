"""A run's live metrics (actors/metrics.py) read from its local Ray instance's Prometheus endpoint
(`--metrics-port`) while the run goes, and the stats.json its interruption leaves.

The run is a `pix2video run` of its own (its own local Ray instance, started with the metrics port and
a short report interval), on 4 tiny clips; the last clip is served over HTTP by a handler that holds
the request until the test lets it go, so the run is certainly still going while the test reads: three
videos edited, one precomputing."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 3
_SAMPLE = re.compile(r"^ray_(pix2video_\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """The pix2video series of a Prometheus text page: (name, labels) -> value; {} when unreachable."""
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = frozenset((k, v) for k, v in _LABEL.findall(m.group(2)) if k in ("run", "status", "stage", "le"))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def _value(scrape: dict, name: str, **labels: str) -> float | None:
    for (n, ls), v in scrape.items():
        if n == name and set(labels.items()) <= set(ls):
            return v
    return None


class _HeldFile(http.server.BaseHTTPRequestHandler):
    """One file over HTTP, each request held until `release` is set (ranges as fsspec asks them)."""

    data: bytes
    release: threading.Event

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
        self._send(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._send(body=True)

    def _send(self, body: bool) -> None:
        self.release.wait(120)
        start, end = 0, len(self.data) - 1
        ranged = self.headers.get("Range", "").startswith("bytes=")
        if ranged:
            first, _, last = self.headers["Range"][6:].partition("-")
            start, end = int(first or 0), min(int(last) if last else end, end)
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.data)}")
        self.end_headers()
        if body:
            self.wfile.write(self.data[start : end + 1])


@pytest.fixture
def held_clip(tmp_path: Path) -> Iterator[tuple[str, threading.Event]]:
    from fixtures.clips import write_sample_video

    write_sample_video(tmp_path / "held.mp4", num_frames=FRAMES, width=64, height=64, seed=9)
    release = threading.Event()
    handler = type("Held", (_HeldFile,), {"data": (tmp_path / "held.mp4").read_bytes(), "release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/held.mp4", release
    finally:
        release.set()
        server.shutdown()


def test_metrics_while_a_run_goes_and_the_stats_it_leaves(
    tiny_model_dir: Path, tmp_path: Path, held_clip: tuple[str, threading.Event]
) -> None:
    from fixtures.clips import write_sample_video

    url, release = held_clip
    rows = []
    for i in range(3):
        write_sample_video(tmp_path / f"c{i}.mp4", num_frames=FRAMES, width=64, height=64, seed=i)
        rows.append({"video": f"c{i}.mp4"})
    rows.append({"video": url})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, port = tmp_path / "out", _free_port()
    argv = ["run", "--manifest", str(tmp_path / "m.jsonl"), "--output", str(out), "--prompt", "a watercolor"]
    argv += ["--model", "tiny", "--size", "64x64", "--steps", "1", "--no-progress", "--num-cpus", "2"]
    argv += ["--num-editors", "1", "--videos-per-call", "1", "--metrics-port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_metrics_report_interval_ms": "300"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    endpoint = f"http://127.0.0.1:{port}/metrics"
    scrapes: list[dict] = []
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            scrape = _scrape(endpoint)
            if scrape:
                scrapes.append(scrape)
                done = _value(scrape, "pix2video_videos_total", status="ok")
                if done == 3 and _value(scrape, "pix2video_videos_precomputing") == 1:
                    break  # three edited, the held one precomputing: what the test reads
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0][-3000:]  # the held clip keeps the run going
        assert scrapes, f"nothing at {endpoint}"
        now = scrapes[-1]
        assert _value(now, "pix2video_videos_total", status="ok") == 3
        assert _value(now, "pix2video_units_total", status="ok") == 3
        assert _value(now, "pix2video_frames_edited_total") == 3 * FRAMES
        assert _value(now, "pix2video_stage_seconds_count", stage="edit") == 3
        assert _value(now, "pix2video_seconds_total", stage="edit") > 0
        assert (_value(now, "pix2video_videos_precomputing"), _value(now, "pix2video_videos_remaining")) == (1, 0)
        assert _value(now, "pix2video_videos_waiting") == 0 and _value(now, "pix2video_editors_alive") == 1
        busy = _value(now, "pix2video_editor_busy_share")
        assert busy is not None and 0 < busy <= 1
        # Counters only grow from one scrape to the next.
        counts = [_value(s, "pix2video_frames_edited_total") or 0 for s in scrapes]
        assert counts == sorted(counts)
        runs = {dict(labels)["run"] for (_, labels) in now}
        assert len(runs) == 1

        proc.send_signal(signal.SIGTERM)  # as Kubernetes stops a pod: the table and stats of what is done
        printed, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, printed[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["interrupted"] is True and stats["run"] == runs.pop()
    assert stats["by_status"] == {"ok": 3} and stats["units"]["total"] == 4
    assert stats["frames"]["edited_this_run"] == 3 * FRAMES and stats["devices"]["editors"] == ["cpu"]
    assert stats["versions"]["ray"] and stats["settings"]
    assert stats["models"] == {"diffusion": "tiny", "caption": "tiny"}  # what the pictures come from


def test_a_metrics_port_that_cannot_serve_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.csv").write_text("video,prompt\nc.mp4,x\n")
    out = tmp_path / "out"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--address", "ray://head:10001"]):
            argv = ["run", "--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--model", "tiny"]
            assert cli([*argv, "--metrics-port", str(port), *extra]) == 2
            err = capfd.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("pix2video run: error: --metrics-port"), err
            assert not out.exists()
