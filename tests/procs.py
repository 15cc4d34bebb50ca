"""The processes of this machine as /proc shows them, for tests that check what a run left running."""

from __future__ import annotations

import os
from pathlib import Path


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every process we can see."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), fields[19], cmd.strip())
    return out


def descendants(root: int) -> dict[int, tuple[str, str]]:
    procs = processes()
    found: dict[int, tuple[str, str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start, cmd) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = (start, cmd)
                frontier.append(pid)
    return found
