"""A local Ray instance started by a driver (`actors.cluster.connect`, what `run` uses) dies with it,
even when the driver is killed with SIGKILL: no raylet, agent or worker of that instance is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from procs import descendants, processes

ROOT = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import ray
    from actors.cluster import connect

    connect("local", num_cpus=1, num_gpus=0)
    ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker process exists too
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int, start: str) -> bool:
    proc = processes().get(pid)
    if proc is None or proc[1] != start:
        return False
    try:
        state = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


def test_local_instance_dies_with_a_sigkilled_driver() -> None:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        assert line.strip() == "ready", line
        # The raylet starts its agents in the background: wait until both are up.
        deadline = time.monotonic() + 60
        while True:
            tree = descendants(driver.pid)
            names = " ".join(cmd for _, cmd in tree.values())
            if "DashboardAgent" in names and "RuntimeEnvAgent" in names and "raylet" in names:
                break
            assert time.monotonic() < deadline, f"agents never started: {names}"
            time.sleep(0.5)
        tree = descendants(driver.pid)
        # Not ours to check: the watchdog (its own session); every other descendant is the instance.
        instance = {pid: v for pid, v in tree.items() if "actors.cluster" not in v[1]}
        assert any("ray::" in cmd for _, cmd in instance.values())  # workers and agents included
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()

    deadline = time.monotonic() + 20  # Ray's agents alone waited ~60 s on the dead GCS
    while True:
        left = {pid: cmd for pid, (start, cmd) in instance.items() if _alive(pid, start)}
        if not left:
            break
        if time.monotonic() > deadline:
            for pid in left:  # do not leave them to the next test either
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"processes of the killed driver's Ray instance still alive: {sorted(left.values())}")
        time.sleep(0.5)


@pytest.mark.parametrize("ending", ["ray.shutdown(); sys.exit(3)", "sys.exit(3)"])
def test_a_driver_that_exits_keeps_its_exit_status(ending: str) -> None:
    """The watchdog acts once the driver's pipe closes, which also happens while a driver exits on its
    own with Ray's log files still open: it must spare that driver, or every verb that started a local
    instance would exit 137 (SIGKILL) instead of its own status. The instance still goes with it."""
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, sys.argv[1])
        import ray
        from actors.cluster import connect

        connect("local", num_cpus=1, num_gpus=0)
        print(ray._private.worker.global_worker.node.get_session_dir_path(), flush=True)
        {ending}
        """
    )
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    session = os.path.realpath(done.stdout.strip().splitlines()[-1]) + "/"
    deadline = time.monotonic() + 30
    while True:  # nothing of that instance is left (raylet, GCS, agents, workers)
        left = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fds = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
                except OSError:
                    continue
                if any(t.startswith(session) for t in fds):
                    left.append(int(entry))
        if not left:
            break
        assert time.monotonic() < deadline, f"processes of the exited driver's instance still alive: {left}"
        time.sleep(0.5)
