"""Shared pieces of the benchmarks: a sandbox for the run, timing, and the report format."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50_ms": statistics.median(ms), "p99_ms": percentile(ms, 99), "n": len(ms)}


@contextlib.contextmanager
def sandbox(prefix: str = "bench") -> Iterator[dict[str, Any]]:
    from g8os.boot import sandbox as sb

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    info = sb.up(name, detach=True, timeout=90)
    info["name"] = name
    try:
        yield info
    finally:
        sb.down(name, timeout=60)


def connect(info: dict[str, Any]) -> redis.Redis:
    return redis.Redis(unix_socket_path=info["socket"], password=info["password"])


def tcp(info: dict[str, Any]) -> redis.Redis:
    return redis.Redis(host=info["host"], port=int(info["port"]), password=info["password"])


def submit(r: redis.Redis, command: str, arguments: dict[str, Any] | None = None, **fields: Any) -> str:
    job = str(uuid.uuid4())
    body = {"id": job, "command": command, "arguments": arguments or {}, **fields}
    r.rpush("core:default", json.dumps(body))
    return job


def wait_result(r: redis.Redis, job: str, timeout: int = 30) -> dict[str, Any]:
    raw = r.brpoplpush(f"result:{job}", f"result:{job}", timeout)
    if raw is None:
        raise TimeoutError(job)
    return json.loads(raw)


def report(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    """rows: (what, measured, floor, ratio)"""
    print(f"\n== {title}")
    width = max(len(r[0]) for r in rows)
    for what, measured, floor, ratio in rows:
        print(f"  {what:<{width}}  {measured:>14}  floor {floor:>14}  ratio {ratio}")


def pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as smaps:
            for line in smaps:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


def node_pids(keeper_pid: int) -> list[int]:
    """Every process of a sandbox (the keeper's descendants)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(keeper_pid).children(recursive=True)]
    except psutil.Error:
        return []


def now() -> float:
    return time.perf_counter()


def env_note() -> str:
    return f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}"
