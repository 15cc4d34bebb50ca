"""The watchdog of a local Ray instance: when its driver dies, however it dies, the instance dies too.

Ray binds the raylet and the GCS to the driver that started them (the kernel kills them with it), but
the raylet's own children, the dashboard agent and the runtime-env agent, notice the raylet's death,
then wait up to a minute on the dead GCS before they exit, listening on loopback all along; workers
may linger the same way. So `actors.cluster.connect` starts this script, as a process of its own
session, before it starts a local instance, with a pipe from the driver on its standard input; once
the instance is up the driver writes the instance's session folder (`/tmp/ray/session_…`) into the
pipe. The pipe's end closes when the driver exits (a normal exit, Ctrl-C, SIGKILL, the OOM killer):
then this script SIGKILLs every process of the user that holds a file open in that folder (every
Ray process of an instance logs there: raylet, GCS, agents, workers), and exits.

Run as a script (`python -I reaper.py`): standard library only, no import of the project.
Linux only (/proc); elsewhere `connect` does not start it.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def holders(folder: str, spare: frozenset[int] = frozenset()) -> list[int]:
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
        pids = holders(folder, spare)
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


def main() -> None:
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


if __name__ == "__main__":
    main()
