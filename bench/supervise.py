"""N supervised `sleep` jobs: time until all run, and node memory per supervised process.

Floor: a bare Python posix_spawn loop starting the same sleeps. Targets: 100 in ≤ 0.5 s,
1000 in ≤ 5 s, ≤ 2 MiB PSS of node memory per supervised process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import psutil

from bench.common import connect, node_pids, now, pss_mib, report, sandbox


def floor(n: int) -> float:
    t = now()
    pids = [os.posix_spawn("/bin/sleep", ["sleep", "1000"], os.environ) for _ in range(n)]
    elapsed = now() - t
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return elapsed


def sleeps_of(keeper: int, marker: str) -> list[int]:
    found = []
    for pid in node_pids(keeper):
        try:
            if psutil.Process(pid).cmdline()[-1:] == [marker]:
                found.append(pid)
        except psutil.Error:
            pass
    return found


def count_running(marker: str) -> int:
    """How many `sleep <marker>` run (pgrep scans /proc in C: the poll must not steal the CPU
    the node needs to start them)."""
    done = subprocess.run(["pgrep", "-c", "-x", "-f", f"sleep {marker}"], capture_output=True, text=True)
    return int(done.stdout.strip() or 0)


def measure(info: dict, n: int) -> tuple[float, float]:
    r = connect(info)
    marker = f"{1000 + n}.{uuid.uuid4().int % 1000}"
    keeper = int(info["pid"])
    before = pss_mib(node_pids(keeper))
    pipe = r.pipeline(transaction=False)
    ids = []
    t = now()
    for _ in range(n):
        job = str(uuid.uuid4())
        ids.append(job)
        pipe.rpush("core:default", json.dumps({"id": job, "command": "core.system",
                                               "arguments": {"name": "sleep", "args": [marker]}}))
    pipe.execute()
    deadline = time.monotonic() + 60
    while count_running(marker) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count_running(marker)} of {n} running")
        time.sleep(0.01)
    elapsed = now() - t
    time.sleep(1.0)  # let the node settle before reading memory
    sleeps = set(sleeps_of(keeper, marker))
    node_only = [p for p in node_pids(keeper) if p not in sleeps]
    after = pss_mib(node_only)
    per_process = (after - before) / n
    kill = str(uuid.uuid4())
    r.rpush("core:default", json.dumps({"id": kill, "command": "job.killall", "arguments": {"signal": 9}}))
    for job in ids:
        r.brpoplpush(f"result:{job}", f"result:{job}", 60)
    return elapsed, per_process


def main() -> None:
    rows = []
    with sandbox("bsup") as info:
        for n, target in ((100, 0.5), (1000, 5.0)):
            elapsed, per_process = measure(info, n)
            base = floor(n)
            rows.append((f"{n} sleeps all running", f"{elapsed:.3f} s", f"{base:.3f} s",
                         f"{elapsed / base:.2f}x (target <= {target} s)"))
            rows.append((f"  node PSS per process ({n})", f"{per_process:.2f} MiB", "-", "target <= 2 MiB"))
    report("supervised processes", rows)


if __name__ == "__main__":
    main()
