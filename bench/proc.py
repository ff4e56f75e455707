"""CPU time of a running process and its children, read from /proc (Linux): what a server spent."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, its live descendants and the descendants that exited.

    Per-thread ``schedstat`` (nanoseconds) for live threads, so short windows (idle seconds) are
    measured finely; ``stat``'s clock ticks for what exited.
    """
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[13]) + int(fields[14])) / _TICK  # children that exited (cutime, cstime)
        for sched in Path(f"/proc/{current}/task").glob("*/schedstat"):
            try:
                total += int(sched.read_text().split()[0]) / 1e9
            except OSError:
                continue
        stack.extend(_children(current))
    return total
