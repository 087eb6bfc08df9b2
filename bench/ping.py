"""core.ping latency against its floors.

Floors, measured in the same run on a redis-server of our own: (1) one redis-py command round
trip, (2) the raw request/response pattern core0 uses, served by a bare Python worker
(client RPUSH + BRPOPLPUSH, worker BLPOP + RPUSH). Target: core.ping p50 ≤ 1.5 × (2).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import tempfile
import time
import uuid

import redis

from bench.common import connect, now, report, sandbox, summary, wait_result

N = 2000


def _worker(sock: str) -> None:
    r = redis.Redis(unix_socket_path=sock)
    while True:
        item = r.blpop("bench:cmds", 0)
        body = json.loads(item[1])
        if body.get("stop"):
            return
        r.rpush(f"result:{body['id']}", json.dumps({"id": body["id"], "state": "SUCCESS", "data": "PONG"}))


def floors() -> tuple[dict, dict]:
    tmp = tempfile.mkdtemp()
    sock = os.path.join(tmp, "redis.sock")
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(unix_socket_path=sock)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        single = []
        for _ in range(N):
            t = now()
            r.ping()
            single.append(now() - t)
        worker = multiprocessing.Process(target=_worker, args=(sock,), daemon=True)
        worker.start()
        pattern = []
        for i in range(N + 200):
            job = str(uuid.uuid4())
            t = now()
            r.rpush("bench:cmds", json.dumps({"id": job, "command": "core.ping"}))
            r.brpoplpush(f"result:{job}", f"result:{job}", 10)
            if i >= 200:
                pattern.append(now() - t)
        r.rpush("bench:cmds", json.dumps({"stop": True}))
        worker.join(5)
        return summary(single), summary(pattern)
    finally:
        server.terminate()
        server.wait()


def measure(info: dict) -> dict:
    r = connect(info)
    latencies = []
    for i in range(N + 200):
        job = str(uuid.uuid4())
        t = now()
        r.rpush("core:default", json.dumps({"id": job, "command": "core.ping", "arguments": {}}))
        wait_result(r, job)
        if i >= 200:
            latencies.append(now() - t)
    return summary(latencies)


def main() -> None:
    single, pattern = floors()
    with sandbox("bping") as info:
        ping = measure(info)
    report("core.ping (unix socket, one client, sequential)", [
        ("core.ping p50", f"{ping['p50_ms']:.3f} ms", f"{pattern['p50_ms']:.3f} ms",
         f"{ping['p50_ms'] / pattern['p50_ms']:.2f}x (target <= 1.5x the raw request/response)"),
        ("core.ping p99", f"{ping['p99_ms']:.3f} ms", f"{pattern['p99_ms']:.3f} ms",
         f"{ping['p99_ms'] / pattern['p99_ms']:.2f}x"),
        ("vs one redis command", f"{ping['p50_ms']:.3f} ms", f"{single['p50_ms']:.3f} ms",
         f"{ping['p50_ms'] / single['p50_ms']:.2f}x"),
    ])


if __name__ == "__main__":
    main()
