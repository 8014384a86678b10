"""Processes on this machine, by PID: trees through ``/proc``, liveness, clean stops (Linux).

Used by the local Flower launcher (:mod:`spikefed.deploy.flower_launch`) and its tests: everything started is
stopped by PID (SIGTERM, a bounded wait, SIGKILL), never by name.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

#: seconds between SIGTERM and SIGKILL when a process tree is stopped
STOP_GRACE_S = 5.0


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (through ``/proc``), children first."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        for c in tree.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_with_env(key: str, value: str) -> list[int]:
    """Live processes (of this user) whose environment holds ``key=value`` exactly."""
    needle = f"{key}={value}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env and pid_alive(int(entry)):
            out.append(int(entry))
    return out


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the launching process dies, even by SIGKILL, so a killed
    demo does not leave its SuperLink / SuperNodes / ``flwr`` running (Flower's SuperExec watches its parent and
    exits with it). SIGKILL because the SuperLink's graceful shutdown waits for its open connections; the
    normal path (:meth:`LocalFederation.stop`) still sends SIGTERM first."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def kill_tree(pid: int, also: set[int] | None = None) -> None:
    """SIGTERM ``pid``, its descendants and ``also``; after :data:`STOP_GRACE_S` SIGKILL whatever lives."""
    targets = [pid, *descendants(pid)]
    if also:
        targets += [p for p in also if p not in targets]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for t in targets:
            if pid_alive(t):
                try:
                    os.kill(t, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + (STOP_GRACE_S if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline and any(pid_alive(t) for t in targets):
            time.sleep(0.1)
        targets += [d for t in list(targets) for d in descendants(t) if d not in targets]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


__all__ = ["STOP_GRACE_S", "cmdline", "descendants", "die_with_parent", "kill_tree", "pid_alive",
           "processes_with_env"]
