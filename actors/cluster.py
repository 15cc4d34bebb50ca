"""Connecting to Ray: an existing cluster (`auto`, `ray://…`, `host:port`), or a local one on loopback.

Ray is imported inside the functions that use it: the command line imports this module first, for
`interrupt_on_sigterm` and `reproducible_numerics`, and `pix2video --help` or a usage error must not
wait for Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import Failure, InputError, first_line

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


# The watchdogs of the local instances this driver started (see `_reap` below). Their pipes must stay
# open as long as this process lives: closing one (or garbage-collecting it) stops that instance.
_REAPERS: list[subprocess.Popen] = []
# GCS addresses of the local instances `connect` started here: fixed clusters (no autoscaler).
_LOCAL: list[str] = []


# oneMKL's Conditional Numerical Reproducibility: the same code path for the same call, whatever the
# alignment of the buffers it is handed (which depends on what the process allocated before). Without
# it MKL may choose another path for the same sgemm from one call to the next on some CPUs, which the
# tiny model amplifies into grey levels. MKL reads it at its first call, so it goes into the
# environment of the workers (`connect`) and of the command-line driver (`reproducible_numerics`).
NUMERIC_ENV = {"MKL_CBWR": "AUTO"}


def reproducible_numerics() -> None:
    """This process's share of NUMERIC_ENV (where the environment does not say otherwise); call it
    before torch's first matrix product."""
    for key, value in NUMERIC_ENV.items():
        os.environ.setdefault(key, value)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> None:
    """SIGTERM (what `timeout`, Kubernetes and systemd send) raises KeyboardInterrupt, as Ctrl-C does:
    the verb stops its editors, writes its results table, disconnects from Ray and exits 130. Ray's
    own handler (installed by `ray.init`) exits from inside whatever the driver is doing instead,
    which left no table and, with Ray's threads still running, aborted the process (exit 134).
    Main thread only (Python's rule for signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def local_instance_running() -> bool:
    """Is this driver connected to a local instance it started (a cluster that never adds nodes)?"""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().gcs_address in _LOCAL


def _start_reaper() -> subprocess.Popen | None:
    """Start the watchdog that kills a local instance when this driver dies, even by SIGKILL (Linux;
    None elsewhere). Started before the instance, so it is there from the instance's first moment."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
        return None
    proc = subprocess.Popen(
        # `-I -m`: this module as the watchdog's script (see `_reap`), with neither the working folder nor
        # the user's environment on its path; its top imports no Ray or torch, so it starts in milliseconds.
        [sys.executable, "-I", "-m", __name__, "--reap"],
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
    metrics_port: int | None = None,
) -> bool:
    """Attach this driver to Ray; returns True when it started a local instance (to shut down later).
    `metrics_port`: where a local instance serves its Prometheus metrics (actors/metrics.py; None: Ray's pick).

    `address`: None -> `$RAY_ADDRESS` if set (a submitted job), else a new local instance;
    `local` -> a new local instance on loopback (never a stale cluster file's dead cluster);
    `auto`, `ray://host:10001`, `host:6379` -> that cluster. A driver already connected (tests,
    notebooks) stays connected. A local instance does not outlive this process, even when it is
    killed with SIGKILL (see `_reap` below).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    # Every worker (editors, precompute tasks) computes with MKL's reproducible mode (see NUMERIC_ENV),
    # unless this environment says otherwise.
    runtime_env = dict(runtime_env or {})
    numeric = {k: os.environ.get(k, v) for k, v in NUMERIC_ENV.items()}
    runtime_env["env_vars"] = {**numeric, **runtime_env.get("env_vars", {})}
    if address == "local":
        _loopback_only()
        watchdog = _start_reaper()
        with _one_line("Ray could not start a local instance"), _interrupts_held():
            ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                runtime_env=runtime_env,
                logging_level=logging.WARNING,
                _metrics_export_port=metrics_port,
            )
        interrupt_on_sigterm()  # ray.init installed its own
        _guard(watchdog)
        _LOCAL.append(ray.get_runtime_context().gcs_address)
        return True
    if _is_loopback(address):
        _loopback_only()  # else Ray rewrites 127.0.0.1 to this machine's routable address
    _check_reachable(address)
    with _one_line(f"could not connect to the Ray cluster at {address}"), _interrupts_held():
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    interrupt_on_sigterm()
    return False


REACH_TIMEOUT_S = 30.0  # how long `connect` tries a HOST:PORT address before it says nothing is there


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a `HOST:PORT` or `ray://HOST:PORT` address; None for `auto` and the like."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        port = parts.port
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname and port else None


def _is_loopback(address: str) -> bool:
    found = _host_port(address)
    return found is not None and (found[0] in ("localhost", "::1") or found[0].startswith("127."))


def _check_reachable(address: str) -> None:
    """A HOST:PORT where nothing listens is one line within REACH_TIMEOUT_S: Ray itself retries such
    an address for minutes, printing only its own warnings."""
    found = _host_port(address)
    if found is None:
        return
    deadline = time.monotonic() + REACH_TIMEOUT_S
    while True:
        try:
            socket.create_connection(found, timeout=5.0).close()
            return
        except OSError as e:
            reason = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise Failure(
                f"could not connect to the Ray cluster at {address}: nothing answers there ({reason}, for "
                f"{REACH_TIMEOUT_S:g} s); check --address (the head's HOST:6379, or ray://HOST:10001)"
            )
        time.sleep(1.0)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM while `ray.init` runs are kept and raised as KeyboardInterrupt once it has
    returned (and so stopped by `_one_line`). Raised inside it they were lost: a KeyboardInterrupt that
    lands in a fork handler of the processes Ray starts is ignored (the run went on, exit 0), and Ray's
    own SIGTERM handler, which it installs first thing, exits with status 15 and prints nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, _frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    except SystemExit as e:
        if e.code != signal.SIGTERM:  # not Ray's SIGTERM handler's sys.exit(signum)
            raise
        held.append(signal.SIGTERM)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if held:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _one_line(what: str) -> Iterator[None]:
    """`ray.init` failing (no disk space, a file-size limit, a busy machine, a wrong address) is one
    line (pipeline.errors.Failure, exit 1) rather than Ray's traceback; what it started is stopped,
    so no Ray thread is left to abort the process as it exits."""
    import ray

    try:
        yield
    except KeyboardInterrupt:
        ray.shutdown()
        raise
    except Exception as e:  # noqa: BLE001 - Ray raises RuntimeError, ConnectionError, plain Exception...
        logs = _logs_of_this_start()  # before the shutdown forgets the node
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - best effort: it did not start
            log.debug("ray.shutdown after a failed start raised", exc_info=True)
        raise Failure(f"{what}: {type(e).__name__}: {first_line(e, 200)}{logs}") from None


def _logs_of_this_start() -> str:
    """Where the instance this driver tried to start logged, when it got that far: never
    /tmp/ray/session_latest, which is whichever instance on the machine started last."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    try:
        return f" (Ray's logs: {os.path.join(node.get_session_dir_path(), 'logs')})" if node is not None else ""
    except Exception:  # noqa: BLE001 - a half-made node may not know its folder
        return ""


def describe_cluster() -> str:
    import ray

    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = res.get("GPU", 0)
    return f"{len(nodes)} node(s), {res.get('CPU', 0):g} CPU, {gpus:g} GPU"


def alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


_EPS = 1e-6


def _node_slots(nodes: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Free resources per node: CPUs, and each GPU's free share (Ray puts a fractional request on one GPU)."""
    slots = []
    for n in nodes:
        total = float(n.get("GPU", 0.0))
        whole = int(total + _EPS)
        gpus = [1.0] * whole + ([total - whole] if total - whole > _EPS else [])
        slots.append({"cpu": float(n.get("CPU", 0.0)), "gpus": gpus})
    return slots


def _place(slots: list[dict[str, Any]], gpus: float, cpus: float) -> bool:
    """Put one request on the first node (and GPU) where it fits, as Ray would; False where none has room."""
    for node in slots:
        if node["cpu"] + _EPS < cpus:
            continue
        if gpus <= _EPS:
            node["cpu"] -= cpus
            return True
        if gpus < 1.0:
            for i, free in enumerate(node["gpus"]):
                if free + _EPS >= gpus:
                    node["gpus"][i] -= gpus
                    node["cpu"] -= cpus
                    return True
            continue
        whole = [i for i, free in enumerate(node["gpus"]) if free > 1.0 - _EPS]
        if len(whole) >= int(round(gpus)):
            for i in whole[: int(round(gpus))]:
                node["gpus"][i] = 0.0
            node["cpu"] -= cpus
            return True
    return False


def _room_left(
    nodes: list[dict[str, float]], editors: int, editor: tuple[float, float], task: tuple[float, float]
) -> bool:
    """After `editors` editors of (GPU, CPU) `editor` took their share, can one task of `task` still run?"""
    slots = _node_slots(nodes)
    for _ in range(editors):
        _place(slots, *editor)  # an editor that does not fit waits; it takes nothing meanwhile
    return _place(slots, *task)


def leave_room_for_precompute(
    count: int,
    editor_gpus: float,
    editor_cpus: float,
    task_gpus: float,
    task_cpus: float,
    *,
    fixed_count: bool,
    nodes: list[dict[str, float]] | None = None,
    fixed_cluster: bool | None = None,
) -> int:
    """How many editors to start so that precompute tasks can still run: `count`, or fewer when the
    count was chosen for the user (`fixed_count=False`). When the editors the user asked for would
    leave no room for a precompute task (a GPU share on a cluster whose GPUs all went to editors, or
    more CPUs than any node has), the run would wait forever in silence: on a fixed cluster (a local
    instance started by `connect`) that is a usage error, said in one line before any work; on a
    cluster that may add nodes (an autoscaler starts GPU workers when tasks ask for GPUs) it is one
    warning line, and the run goes on. `nodes`: each alive node's CPU and GPU (default: Ray's);
    `fixed_cluster`: default, whether this process started the instance it is connected to.
    """
    if nodes is None:
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if fixed_cluster is None:
        fixed_cluster = local_instance_running()
    task = (task_gpus, task_cpus)
    flags = f"--precompute-gpus {task_gpus:g} --precompute-cpus {task_cpus:g}"
    if task_gpus > 1 and abs(task_gpus - round(task_gpus)) > _EPS:
        raise InputError(f"--precompute-gpus {task_gpus:g}: a share above 1 must be a whole number of GPUs")

    def refuse(message: str) -> int:
        if fixed_cluster:
            raise InputError(message)
        log.warning("%s (unless the cluster adds nodes; on one that cannot, stop the run and change flags)", message)
        return count

    if task_gpus > _EPS and not any(float(n.get("GPU", 0)) > _EPS for n in nodes):
        return refuse(
            f"--precompute-gpus {task_gpus:g}: the cluster has no GPU, so precompute tasks would wait forever; "
            "use --precompute-gpus 0 (depth and captions on the CPU)"
        )
    if not _room_left(nodes, 0, (0.0, 0.0), task):
        most_cpu = max((float(n.get("CPU", 0)) for n in nodes), default=0.0)
        return refuse(f"{flags}: no node of the cluster has that much free (largest: {most_cpu:g} CPU); ask for less")
    editor = (editor_gpus, editor_cpus)
    if _room_left(nodes, count, editor, task):
        return count
    fewer = next((k for k in range(count - 1, 0, -1) if _room_left(nodes, k, editor, task)), 0)
    if not fixed_count and fewer:
        log.info(
            "%d editors instead of %d, so that precompute tasks (%g GPU, %g CPU) have room to run",
            fewer,
            count,
            task_gpus,
            task_cpus,
        )
        return fewer
    asked = f"--num-editors {count}" if fixed_count else f"{count} editor(s)"
    hint = f"--num-editors {fewer}" if fewer else "a smaller --gpus-per-editor or --cpus-per-editor"
    share = round(1.0 - task_gpus, 4)  # an editor and a precompute task on one GPU
    if not fewer and 0 < share < editor_gpus and _room_left(nodes, count, (share, editor_cpus), task):
        hint = f"--gpus-per-editor {share:g}"
    other = "--precompute-gpus 0" if task_gpus > _EPS else "a smaller --precompute-cpus"
    return refuse(
        f"{asked} at {editor_gpus:g} GPU and {editor_cpus:g} CPU each leave no room on this cluster "
        f"({describe_nodes(nodes)}) for a precompute task ({flags}), which would wait forever: "
        f"use {hint}, or {other}"
    )


def describe_nodes(nodes: list[dict[str, float]]) -> str:
    cpu = sum(float(n.get("CPU", 0)) for n in nodes)
    gpu = sum(float(n.get("GPU", 0)) for n in nodes)
    return f"{len(nodes)} node(s), {cpu:g} CPU, {gpu:g} GPU"


# ---------------------------------------------------------------------------------------------------
# The watchdog of a local instance: when its driver dies, however it dies, the instance dies too.
#
# Ray binds the raylet and the GCS to the driver that started them (the kernel kills them with it), but
# the raylet's own children, the dashboard agent and the runtime-env agent, notice the raylet's death,
# then wait up to a minute on the dead GCS before they exit, listening on loopback all along; workers
# may linger the same way. So `connect` starts this module as a script (`_start_reaper`), in a process
# session of its own, before it starts a local instance, with a pipe from the driver on its standard
# input; once the instance is up the driver writes the instance's session folder (`/tmp/ray/session_…`)
# into it (`_guard`). The pipe's end closes when the driver exits (a normal exit, Ctrl-C, SIGKILL, the
# OOM killer): then `_reap` SIGKILLs every process of the user that holds a file open in that folder
# (every Ray process of an instance logs there: raylet, GCS, agents, workers), and exits. Linux only
# (/proc); elsewhere `connect` does not start it.
# ---------------------------------------------------------------------------------------------------


def instance_processes(folder: str, spare: frozenset[int] = frozenset()) -> list[int]:
    """Pids of this user's processes (other than this one and `spare`) with a file open under `folder`."""
    prefix = folder.rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid() or int(entry) in spare:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.append(int(entry))
                break
    return found


def kill_instance(folder: str, rounds: int = 20, pause: float = 0.25, spare: frozenset[int] = frozenset()) -> int:
    """SIGKILL every process of the instance but `spare`, again until none is left (a dying raylet
    may still start a worker). Returns how many were killed."""
    killed: set[int] = set()
    for _ in range(rounds):
        pids = instance_processes(folder, spare)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(pause)
    return len(killed)


def _reap() -> None:
    """The watchdog's body: wait for the driver's pipe to close, then kill the instances it named."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver; we act once it is gone
    # The driver itself is spared: the pipe also closes while a driver exits normally, with Ray's log
    # files still open, and killing it then would turn every exit status into 137 (a dead driver has
    # no pid left to spare).
    driver = frozenset({os.getppid()})
    folders = []
    for line in sys.stdin:  # the driver writes the session folder, then nothing: this ends at end of file
        folder = os.path.realpath(line.strip()) if line.strip() else ""
        if os.path.basename(folder).startswith("session_"):  # never a wider folder than one instance's
            folders.append(folder)
    for folder in folders:
        kill_instance(folder, spare=driver)


if __name__ == "__main__" and sys.argv[1:] == ["--reap"]:
    _reap()
