"""Every OS process of the node, for process.list and process.kill (not only core0's jobs).

Processes come and go while they are listed: one that vanishes mid-read is skipped, and a field
that cannot be read (a zombie's cmdline, a kernel thread's memory) gets an empty value.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psutil

from g8os.messages.errors import FailedPrecondition, InvalidArgument, NotFound

_ATTRS = ["ppid", "name", "cmdline", "create_time", "cpu_times", "memory_info", "num_fds", "status"]

# (pid, createtime) -> (monotonic seconds, cpu seconds) of the last listing, so a process's
# `percent` is its use since the previous listing (as top shows it) without sleeping to sample.
# Keyed with the start time so a recycled pid does not inherit a dead process's sample.
_samples: dict[tuple[int, int], tuple[float, float]] = {}
_samples_lock = threading.Lock()
_MAX_SAMPLES = 1 << 17


def _swap_bytes(pid: int) -> int:
    # VmSwap of /proc/<pid>/status is the cheap way; psutil's memory_full_info walks smaps.
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmSwap:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _describe(proc: psutil.Process, now: float, wall: float,
              seen: dict[tuple[int, int], tuple[float, float]]) -> dict[str, Any] | None:
    try:
        with proc.oneshot():
            info = proc.as_dict(_ATTRS, ad_value=None)
    except (psutil.NoSuchProcess, OSError):
        return None
    pid = proc.pid
    create = info["create_time"] or 0.0
    createtime = int(create * 1000)
    times = info["cpu_times"]
    user = float(times.user) if times is not None else 0.0
    system = float(times.system) if times is not None else 0.0
    total = user + system
    key = (pid, createtime)
    with _samples_lock:
        previous = _samples.get(key)
    if previous is not None and now > previous[0]:
        percent = (total - previous[1]) * 100.0 / (now - previous[0])
    elif create and wall > create:  # first sight: its average over its lifetime
        percent = total * 100.0 / (wall - create)
    else:
        percent = 0.0
    seen[key] = (now, total)
    memory = info["memory_info"]
    fds = info["num_fds"]
    return {
        "pid": pid,
        "ppid": info["ppid"] or 0,
        "name": info["name"] or "",
        "cmdline": list(info["cmdline"] or []),
        "createtime": createtime,
        "cpu": {"user": user, "system": system, "percent": round(max(percent, 0.0), 2)},
        "rss": memory.rss if memory is not None else 0,
        "vms": memory.vms if memory is not None else 0,
        "swap": _swap_bytes(pid),
        "ofd": fds if fds is not None else -1,
        "state": info["status"] or "",
    }


def list_processes(pid: int | None = None) -> list[dict[str, Any]]:
    """Every process visible in this PID namespace, by pid; or just `pid` (NotFound if none)."""
    now = time.monotonic()
    wall = time.time()
    seen: dict[tuple[int, int], tuple[float, float]] = {}
    if pid is not None:
        if pid <= 0:
            raise NotFound(f"no process with pid {pid}")
        try:
            proc = psutil.Process(pid)
        except (psutil.NoSuchProcess, OverflowError, ValueError):
            raise NotFound(f"no process with pid {pid}")
        entry = _describe(proc, now, wall, seen)
        if entry is None:
            raise NotFound(f"no process with pid {pid}")
        with _samples_lock:
            if len(_samples) >= _MAX_SAMPLES:
                _samples.clear()
            _samples.update(seen)
        return [entry]
    result: list[dict[str, Any]] = []
    for proc in psutil.process_iter():
        entry = _describe(proc, now, wall, seen)
        if entry is not None:
            result.append(entry)
    with _samples_lock:
        # A full listing saw every live process: what it did not see is dead.
        _samples.clear()
        _samples.update(seen)
    result.sort(key=lambda entry: entry["pid"])
    return result


def kill_process(pid: int, sig: int) -> None:
    """Send signal `sig` to process `pid`, unless that would take down g8os or the node."""
    if pid <= 0:
        # os.kill would signal a whole process group (0, -pgid) or every process (-1).
        raise InvalidArgument(f"pid must be positive, got {pid}", field="pid")
    if not 0 <= sig <= signal.SIGRTMAX:
        raise InvalidArgument(f"no such signal {sig}", field="signal")
    protected = {
        1: "it is the init of this PID namespace",
        os.getppid(): "it is the parent of g8os",
        os.getpid(): "it is g8os itself",
    }
    if pid in protected:
        raise FailedPrecondition(f"refusing to signal pid {pid}: {protected[pid]}")
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, OverflowError):
        raise NotFound(f"no process with pid {pid}")
    except PermissionError:
        raise FailedPrecondition(f"not permitted to signal pid {pid}")
    except OSError as e:
        raise InvalidArgument(f"cannot send signal {sig} to pid {pid}: {e.strerror}", field="signal")
