"""Signals while the local Ray instance starts, and an address where no cluster is (issue 24 item 6).

Before: SIGTERM in the seconds `ray.init` takes ended the run with status 15 and nothing printed (Ray's
own SIGTERM handler), Ctrl-C to the process group in that window was lost in a fork handler and the run
finished with exit 0, and `--address 127.0.0.1:1` waited for minutes printing only Ray's warnings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import descendants

from actors.cluster import _interrupts_held

ROOT = Path(__file__).resolve().parent.parent


def test_signals_inside_the_window_are_held_then_raised() -> None:
    ran_on = []
    with pytest.raises(KeyboardInterrupt):
        with _interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            ran_on.append("the rest of ray.init")  # neither signal stopped the work inside
    assert ran_on == ["the rest of ray.init"]
    with pytest.raises(KeyboardInterrupt):  # Ray's own SIGTERM handler: sys.exit(SIGTERM)
        with _interrupts_held():
            raise SystemExit(signal.SIGTERM)
    with pytest.raises(SystemExit):  # any other exit stays an exit
        with _interrupts_held():
            raise SystemExit(3)
    with _interrupts_held():  # no signal: nothing raised
        pass


def _clip(folder: Path) -> Path:
    from fixtures.clips import write_sample_video

    folder.mkdir()
    write_sample_video(folder / "a.mp4", num_frames=3, width=64, height=64)
    return folder


def _driver(argv: list[str], code: str = "") -> subprocess.Popen:
    script = f"import sys\n{code}\nfrom jobs.cli import main\nsys.exit(main({argv!r}))"
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        start_new_session=True,  # a process group of its own, as a terminal's job is
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)},
    )


def test_ctrl_c_while_ray_starts_is_an_interrupt(tmp_path: Path) -> None:
    clips = _clip(tmp_path / "clips")
    argv = ["run", "--manifest", str(clips), "--output", str(tmp_path / "out"), "--prompt", "x"]
    driver = _driver([*argv, "--model", "tiny", "--size", "64x64", "--steps", "2", "--no-progress"])
    try:
        deadline = time.monotonic() + 240
        while True:  # the moment Ray's first processes exist: ray.init is under way
            commands = [cmd for _, cmd in descendants(driver.pid).values()]
            if any("gcs_server" in c or "raylet" in c for c in commands) or driver.poll() is not None:
                break
            assert time.monotonic() < deadline, "Ray never started"
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGINT)
        out, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, out[-2000:]
    assert "interrupted" in out


def test_an_address_where_nothing_listens_is_one_line(tmp_path: Path) -> None:
    clips = _clip(tmp_path / "clips")
    argv = ["run", "--manifest", str(clips), "--output", str(tmp_path / "out"), "--prompt", "x"]
    argv += ["--model", "tiny", "--address", "127.0.0.1:1"]
    driver = _driver(argv, code="import actors.cluster\nactors.cluster.REACH_TIMEOUT_S = 2.0")
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 1, out[-2000:]
    lines = [line for line in out.splitlines() if "error" in line]
    assert lines == [lines[0]] and "127.0.0.1:1" in lines[0] and "nothing answers there" in lines[0], out[-2000:]
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_a_failed_start_names_its_own_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not /tmp/ray/session_latest, which is whichever instance on the machine started last."""
    import ray

    from actors.cluster import _one_line
    from pipeline.errors import Failure

    class Node:
        def get_session_dir_path(self) -> str:
            return "/tmp/ray/session_2026-12-07_this_one"

    monkeypatch.setattr(ray._private.worker, "_global_node", Node())
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(Failure) as failed:
        with _one_line("Ray could not start a local instance"):
            raise RuntimeError("Failed to start GCS")
    assert "/tmp/ray/session_2026-12-07_this_one/logs" in str(failed.value)
    monkeypatch.setattr(ray._private.worker, "_global_node", None)  # it failed before it had a folder
    with pytest.raises(Failure) as failed:
        with _one_line("Ray could not start a local instance"):
            raise RuntimeError("Failed to start GCS")
    assert "session_latest" not in str(failed.value) and "Failed to start GCS" in str(failed.value)
