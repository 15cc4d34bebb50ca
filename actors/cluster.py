"""Connecting to Ray: an existing cluster (`auto`, `ray://…`, `host:port`), or a local one on loopback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

from . import reaper

log = logging.getLogger(__name__)


def _loopback_only() -> None:
    """Make a local Ray instance listen on 127.0.0.1 only.

    Ray picks the machine's routable address for a single-node instance on Linux (so that other
    nodes could join); this is Ray's own switch for single-machine platforms, which binds every
    Ray process to loopback instead. The environment variable reaches the processes Ray starts;
    the constant covers a `ray` module that was imported before we got here.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


# The watchdogs of the local instances this driver started (see actors/reaper.py). Their pipes must stay
# open as long as this process lives: closing one (or garbage-collecting it) stops that instance.
_REAPERS: list[subprocess.Popen] = []


def _start_reaper() -> subprocess.Popen | None:
    """Start the watchdog that kills a local instance when this driver dies, even by SIGKILL (Linux;
    None elsewhere). Started before the instance, so it is there from the instance's first moment."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
        return None
    proc = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(reaper.__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the terminal's process group: Ctrl-C reaches the driver only
        close_fds=True,
    )
    _REAPERS.append(proc)
    return proc


def _guard(proc: subprocess.Popen | None) -> None:
    """Tell the watchdog which instance is this driver's (its session folder)."""
    import ray

    if proc is None or proc.stdin is None:
        return
    session = ray._private.worker.global_worker.node.get_session_dir_path()
    proc.stdin.write(os.path.realpath(session).encode() + b"\n")
    proc.stdin.flush()


def connect(
    address: str | None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> bool:
    """Attach this driver to Ray; returns True when it started a local instance (to shut down later).

    `address`: None -> `$RAY_ADDRESS` if set (a submitted job), else a new local instance;
    `local` -> a new local instance on loopback (never a stale cluster file's dead cluster);
    `auto`, `ray://host:10001`, `host:6379` -> that cluster. A driver already connected (tests,
    notebooks) stays connected. A local instance does not outlive this process, even when it is
    killed with SIGKILL (see actors/reaper.py).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        _loopback_only()
        watchdog = _start_reaper()
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            runtime_env=runtime_env,
            logging_level=logging.WARNING,
        )
        _guard(watchdog)
        return True
    ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    return False


def describe_cluster() -> str:
    import ray

    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = res.get("GPU", 0)
    return f"{len(nodes)} node(s), {res.get('CPU', 0):g} CPU, {gpus:g} GPU"


def alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))
