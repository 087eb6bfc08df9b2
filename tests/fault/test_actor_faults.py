"""Fault injection: kill each kind of actor (and redis-server) under load from several clients.

Each comes back per its strategy, and every submitted job gets exactly one result; a job whose
process died with its supervisor gets ERROR with the reason in `critical`.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from wire import call, push, result, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def tree(r):
    return json.loads(call(r, "actor.tree")["data"])


def find(node, path):
    if node["path"] == path:
        return node
    for child in node.get("children", []):
        found = find(child, path)
        if found:
            return found
    return None


class Load:
    """Several clients submitting short jobs while faults happen; remembers every id pushed."""

    def __init__(self, node, clients: int = 3) -> None:
        self.node = node
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        r = self.node.redis()
        while not self.stop.is_set():
            try:
                job = push(r, "bash", {"script": "echo hi"})
            except Exception:  # redis-server being killed: the push did not happen
                time.sleep(0.05)
                continue
            with self.lock:
                self.ids.append(job)
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def test_every_actor_comes_back_and_no_job_is_lost(own_node):
    r = own_node.redis()
    wait_for(lambda: find(tree(r), "/gateway"), what="tree up")
    with Load(own_node) as load:
        for path in ("/gateway", "/log", "/stats", "/services", "/jobs"):
            before = find(tree(r), path)
            res = call(r, "actor.kill", {"path": path})
            assert res["state"] == "SUCCESS", res

            def back(path=path, before=before):
                node = find(tree(r), path)
                return node and node["state"] == "running" and node["pid"] != before["pid"]

            wait_for(back, timeout=30, interval=0.05, what=f"{path} restarted")
            assert find(tree(r), path)["restarts"] >= 1
        redis_pid = find(tree(r), "/services/redis")["pid"]
        call(r, "actor.kill", {"path": "/services/redis"})
        r2 = own_node.redis()

        def redis_back():
            try:
                node = find(tree(r2), "/services/redis")
                return node and node["pid"] not in (None, redis_pid) and node["state"] == "running"
            except Exception:
                return False

        wait_for(redis_back, timeout=30, interval=0.1, what="redis restarted")
        # The load goes on until jobs pushed after the restart are answered as well.
        settled = len(load.ids)
        wait_for(lambda: len(load.ids) > settled + 10, timeout=30, what="load resumed")
    r = own_node.redis()
    missing, doubled = [], []
    for job in load.ids:
        try:
            result(r, job, timeout=30)
        except TimeoutError:
            missing.append(job)
            continue
        if r.llen(f"result:{job}") != 1:
            doubled.append(job)
    assert len(load.ids) > 20
    assert not missing, f"{len(missing)} of {len(load.ids)} jobs got no result"
    assert not doubled


def test_job_dies_with_its_supervisor_and_gets_error(own_node):
    r = own_node.redis()
    job = push(r, "bash", {"script": "sleep 60"})
    wait_for(lambda: find(tree(r), f"/jobs/{job}"), what="job running")
    assert call(r, "actor.kill", {"path": "/jobs"})["state"] == "SUCCESS"
    res = result(r, job, timeout=30)
    assert res["state"] == "ERROR"
    assert "supervisor" in res["critical"]


def test_restartable_job_is_rerun_after_supervisor_crash(own_node, shared_dir):
    r = own_node.redis()
    counter = shared_dir / "runs"
    job = push(r, "bash", {"script": f"echo x >> {counter}; sleep 60"}, max_restart=3)
    wait_for(lambda: counter.exists(), what="first run")
    call(r, "actor.kill", {"path": "/jobs"})
    wait_for(lambda: counter.read_text().count("x") == 2, timeout=30, what="second run")
    call(r, "job.kill", {"id": job, "signal": 9})
    assert result(r, job)["state"] == "KILLED"


def test_light_actor_kill_applies_its_spec(own_node):
    r = own_node.redis()
    job = push(r, "bash", {"script": "sleep 60"})
    path = f"/jobs/{job}"
    wait_for(lambda: find(tree(r), path), what="light actor")
    assert call(r, "actor.kill", {"path": path})["state"] == "SUCCESS"
    res = result(r, job)
    assert res["state"] == "ERROR" and "actor.kill" in res["critical"]
