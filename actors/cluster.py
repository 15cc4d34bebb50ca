"""Connecting to Ray: an existing cluster (`auto`, `ray://…`, `host:port`), or a local one on loopback."""

from __future__ import annotations

import logging
import os
from typing import Any

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
    notebooks) stays connected.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        _loopback_only()
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            runtime_env=runtime_env,
            logging_level=logging.WARNING,
        )
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
