"""core.system('true'): latency and throughput against posix_spawn + reap from Python.

Targets: ≥ 500 jobs/s, p50 ≤ 3 ms.
"""

from __future__ import annotations

import json
import os
import uuid

from bench.common import connect, now, report, sandbox, summary, wait_result

SEQUENTIAL = 500
BURST = 2000


def floor() -> tuple[dict, float]:
    latencies = []
    for _ in range(SEQUENTIAL):
        t = now()
        pid = os.posix_spawn("/bin/true", ["true"], os.environ)
        os.waitpid(pid, 0)
        latencies.append(now() - t)
    t = now()
    pids = [os.posix_spawn("/bin/true", ["true"], os.environ) for _ in range(1000)]
    for pid in pids:
        os.waitpid(pid, 0)
    return summary(latencies), 1000 / (now() - t)


def measure(info: dict) -> tuple[dict, float]:
    r = connect(info)
    args = {"name": "true", "args": []}
    latencies = []
    for i in range(SEQUENTIAL + 50):
        job = str(uuid.uuid4())
        t = now()
        r.rpush("core:default", json.dumps({"id": job, "command": "core.system", "arguments": args}))
        result = wait_result(r, job)
        assert result["state"] == "SUCCESS", result
        if i >= 50:
            latencies.append(now() - t)
    jobs = [str(uuid.uuid4()) for _ in range(BURST)]
    t = now()
    pipe = r.pipeline(transaction=False)
    for job in jobs:
        pipe.rpush("core:default", json.dumps({"id": job, "command": "core.system", "arguments": args}))
    pipe.execute()
    for job in jobs:
        assert wait_result(r, job, timeout=120)["state"] == "SUCCESS"
    return summary(latencies), BURST / (now() - t)


def main() -> None:
    spawn, spawn_rate = floor()
    with sandbox("bsys") as info:
        system, rate = measure(info)
    report("core.system('true')", [
        ("p50 latency", f"{system['p50_ms']:.2f} ms", f"{spawn['p50_ms']:.2f} ms",
         f"{system['p50_ms'] / spawn['p50_ms']:.2f}x (target p50 <= 3 ms)"),
        ("p99 latency", f"{system['p99_ms']:.2f} ms", f"{spawn['p99_ms']:.2f} ms",
         f"{system['p99_ms'] / spawn['p99_ms']:.2f}x"),
        (f"throughput ({BURST} pushed at once)", f"{rate:.0f} jobs/s", f"{spawn_rate:.0f} spawns/s",
         f"{rate / spawn_rate:.2f}x (target >= 500 jobs/s)"),
    ])


if __name__ == "__main__":
    main()
