"""Speaking the G8OS wire protocol by hand (raw Redis), to test the node at the wire level."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis


def push(r: redis.Redis, command: str, arguments: dict[str, Any] | None = None, **fields: Any) -> str:
    job_id = fields.pop("id", None) or str(uuid.uuid4())
    body = {"id": job_id, "command": command, "arguments": arguments or {}, **fields}
    r.rpush("core:default", json.dumps(body))
    return job_id


def result(r: redis.Redis, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The job's result, read without consuming it (as clients do)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no result for {job_id} within {timeout}s")
        raw = r.brpoplpush(f"result:{job_id}", f"result:{job_id}", max(1, min(5, int(left))))
        if raw is not None:
            return json.loads(raw)


def call(r: redis.Redis, command: str, arguments: dict[str, Any] | None = None, timeout: float = 20.0,
         **fields: Any) -> dict[str, Any]:
    return result(r, push(r, command, arguments, **fields), timeout)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def stream(r: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.lrange(f"stream:{job_id}", 0, -1)]


def host_pid(keeper_pid: int, node_pid: int) -> int:
    """The host's pid of a node process known by its pid inside the node (actor.tree, job.list).

    Pids inside a sandbox are those of its own PID namespace: never signal one from the host
    without translating it (pid 8 in the node is some unrelated host process)."""
    import psutil

    for proc in psutil.Process(keeper_pid).children(recursive=True):
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith("NSpid:"):
                        if int(line.split()[-1]) == node_pid:
                            return proc.pid
                        break
        except (OSError, ValueError):
            continue
    raise LookupError(f"no process {node_pid} in the node of keeper {keeper_pid}")


def alive(proc: Any) -> bool:
    """A psutil.Process that still runs (a zombie does not)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
