"""Issue 24 item 5: every Ray cluster the suite or the README starts on one machine listens on loopback only.

Three kinds: the local instance `connect` starts (`run`, `demo` and the other verbs without --address,
and the suite's session instance), `ray start --head` on 127.0.0.1 as the submit test starts it, and
the two-node `ray.cluster_utils.Cluster` of tests/test_jobs_cluster.py. (cluster.yaml's nodes must
reach each other; there only the dashboard stays on the head's loopback.) Each is started in
processes of its own, with workers or a job on it; then every TCP socket in LISTEN state and every
bound UDP socket of every process of the cluster (each process holding a file open in its session
folder: GCS, raylets, dashboard and its agent, runtime-env agent, the autoscaler's monitor, the
client server, workers, the job's driver) is read from /proc, and each must be on 127.0.0.0/8 or
::1; so must every IPv4 address in their command lines. Ray binds its processes to the node's
address, and on Linux a single machine's address is its routable one unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (actors/cluster.py `_loopback_only`; tests/test_jobs_cluster.py
`_env`): without it (measured, Ray 2.60) the GCS and raylet listened on `::`, the dashboard agent on
0.0.0.0, and `ray start --head --node-ip-address 127.0.0.1` handed the machine's own address to its
processes; the first two tests below then fail (checked by turning the switch off).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_jobs_cluster import ray_head

ROOT = Path(__file__).resolve().parents[1]
# TCP states in /proc/net/tcp*: 0A = LISTEN; UDP sockets bound to a port are in state 07.
_LISTENING = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}


def _address(hex_address: str) -> tuple[str, int]:
    ip, port = hex_address.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    # IPv6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words), int(port, 16)


def _sockets() -> dict[str, tuple[str, str, int]]:
    """inode -> (protocol, ip, port) of every listening TCP and bound UDP socket of this machine."""
    found = {}
    for proto, state in _LISTENING.items():
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state and _address(fields[1])[1] != 0:
                found[fields[9]] = (proto, *_address(fields[1]))
    return found


def _processes(folder: str) -> dict[int, list[str]]:
    """pid -> command line of every process with a file open under `folder` (a cluster's temp folder)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            targets = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
            command = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile, or another user's
            continue
        if any(t.startswith(folder.rstrip("/") + "/") for t in targets):
            found[int(entry)] = command
    return found


def _listeners(pids: list[int]) -> list[tuple[int, str, str, int]]:
    """(pid, protocol, ip, port) of each listening socket the processes `pids` hold."""
    sockets = _sockets()
    found = []
    for pid in pids:
        try:
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for target in targets:
            inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
            if inode in sockets:
                found.append((pid, *sockets[inode]))
    return found


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket on 127.0.0.1
    return (mapped or address).is_loopback


def _check_cluster(folder: str, also: tuple[int, ...] = (), expect: tuple[str, ...] = ()) -> None:
    """Every socket the cluster's processes (and `also`) listen on, and every IPv4 address in their
    command lines, is loopback; and the listing saw the processes `expect` names (not a vacuous pass)."""
    processes = _processes(folder)
    for pid in also:
        processes[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    listeners = _listeners(list(processes))
    named = {pid: " ".join(processes[pid])[:120] for pid, *_ in listeners}
    wrong = [(named[pid], proto, ip, port) for pid, proto, ip, port in listeners if not _loopback(ip)]
    assert not wrong, wrong
    listening = " ".join(named.values())
    for name in expect:
        assert name in listening, (name, sorted(set(named.values())))
    for pid, command in processes.items():
        for ip in re.findall(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])", " ".join(command)):
            assert _loopback(ip), (pid, ip, " ".join(command)[:300])


LOCAL = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from actors.cluster import connect

    connect("local", num_cpus=2, num_gpus=0)

    @ray.remote
    class Worker:
        def pid(self):
            return os.getpid()

    workers = [Worker.remote() for _ in range(2)]
    pids = ray.get([w.pid.remote() for w in workers])
    session = ray._private.worker.global_worker.node.get_session_dir_path()
    print(json.dumps({"session": os.path.realpath(session), "workers": pids}), flush=True)
    sys.stdin.readline()  # the test lists the sockets meanwhile
    ray.shutdown()
    """
)


def test_local_instance_listens_on_loopback_only(tmp_path: Path) -> None:
    """`connect`'s local instance, with two actors: its own switch, not the environment's, binds it."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    driver = subprocess.Popen(
        [sys.executable, "-c", LOCAL],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = driver.stdout.readline()
        assert line, "the driver did not start its instance"
        started = json.loads(line)
        _check_cluster(
            started["session"],
            also=(driver.pid,),
            expect=("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent", "ray::Worker"),
        )
        assert set(started["workers"]) <= set(_processes(started["session"]))
    finally:
        driver.communicate("\n", timeout=120)
    assert driver.returncode == 0


JOB = "python -c \"import ray, time; ray.init(); print('ready', flush=True); time.sleep(60)\""


def test_ray_start_head_and_its_job_listen_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The submit test's `ray start --head` (dashboard on), with a job whose driver is connected."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the head was started (tests/test_jobs_cluster._env)

    with ray_head() as (url, temp_dir):
        client = JobSubmissionClient(url)
        job = client.submit_job(entrypoint=JOB)
        deadline = time.monotonic() + 120
        while "ready" not in client.get_job_logs(job):
            assert client.get_job_status(job) in (JobStatus.PENDING, JobStatus.RUNNING), client.get_job_logs(job)
            assert time.monotonic() < deadline, "the job's driver did not connect"
            time.sleep(0.5)
        _check_cluster(
            os.path.realpath(temp_dir),
            expect=("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent", "dashboard", "ray.util.client"),
        )
        client.stop_job(job)


TWO_NODES = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from ray.cluster_utils import Cluster

    common = dict(node_ip_address="127.0.0.1", include_dashboard=False)  # as tests/test_jobs_cluster.py's
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, **common))
    cluster.add_node(num_cpus=1, **common)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    session = ray._private.worker.global_worker.node.get_session_dir_path()
    print(json.dumps({"session": os.path.realpath(session), "address": cluster.address}), flush=True)
    sys.stdin.readline()
    os._exit(0)  # the test ends the process group
    """
)


def test_two_node_cluster_listens_on_loopback_only() -> None:
    """The two-node cluster of tests/test_jobs_cluster.py (ray.cluster_utils.Cluster, two raylets)."""
    from test_jobs_cluster import _env, _stop_group

    driver = subprocess.Popen(
        [sys.executable, "-c", TWO_NODES],
        cwd=ROOT,
        env=_env(),
        start_new_session=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = driver.stdout.readline()
        assert line, "the cluster did not start"
        started = json.loads(line)
        assert started["address"].startswith("127.0.0.1:")
        _check_cluster(started["session"], also=(driver.pid,), expect=("gcs_server", "raylet"))
        raylets = [p for p, c in _processes(started["session"]).items() if c[0].endswith("/raylet")]
        assert len(raylets) == 2
    finally:
        driver.stdin.close()
        _stop_group(driver)
