"""aggregator.query on a sandbox node of its own, with short periods (2 s and 60 s) and samples of
the node every half second: jobs' statsd lines and core0's own metrics, closed periods pushed to
`statistics:<period>`, the state kept across a restart of the StatsActor."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from wire import call, host_pid, push, result, wait_for

from g8os.boot import sandbox

pytestmark = pytest.mark.timeout(180)

PERIOD = 2


@pytest.fixture(scope="module")
def agg_node() -> Iterator[dict[str, Any]]:
    name = f"agg-{os.getpid() % 100000}-{uuid.uuid4().hex[:4]}"
    info = sandbox.up(name, detach=True, timeout=90,
                      settings={"stats_periods": [PERIOD, 60], "stats_interval": 0.5})
    info["name"] = name
    try:
        yield info
    finally:
        if sandbox.status(name)["state"] not in ("absent", "stale"):
            sandbox.down(name, timeout=60)


@pytest.fixture(scope="module")
def r(agg_node: dict[str, Any]) -> Iterator[Any]:
    import redis

    conn = redis.Redis(unix_socket_path=agg_node["socket"], password=agg_node["password"])
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def client(agg_node: dict[str, Any]) -> Iterator[Any]:
    from g8os.client import Client

    with Client(agg_node["host"], int(agg_node["port"]), agg_node["password"]) as c:
        yield c


def test_statsd_lines_of_a_job_are_averaged(r: Any, client: Any) -> None:
    key = f"test.avg.{uuid.uuid4().hex[:6]}"
    script = (f"echo '10::{key}:10|A|id=web,zone=a'; echo '10::{key}:30|A|id=web,zone=a'; "
              f"echo '10::{key}:5|A|id=db'; echo '10::not a metric'")
    job = push(r, "bash", {"script": script})
    assert result(r, job)["state"] == "SUCCESS"
    found = wait_for(lambda: client.aggregator.query(key), what="the metric")
    assert set(found) == {f"{key}/web", f"{key}/db"}
    web = found[f"{key}/web"]
    assert web["op"] == "A" and web["tags"] == {"id": "web", "zone": "a"} and web["last_value"] == 30
    samples = [web["current"][str(PERIOD)], *web["history"][str(PERIOD)]]
    assert sum(s["count"] for s in samples) == 2 and sum(s["total"] for s in samples) == 40
    assert max(s["max"] for s in samples) == 30
    hour = web["current"]["60"]
    assert hour["count"] == 2 and hour["avg"] == 20 and hour["start"] % 60 == 0
    assert set(client.aggregator.query(key, zone="a")) == {f"{key}/web"}
    assert client.aggregator.query(key, zone="b") == {}


def test_differential_lines_become_rates(r: Any, client: Any) -> None:
    key = f"test.rate.{uuid.uuid4().hex[:6]}"
    job = push(r, "bash", {"script": f"echo '10::{key}:100|D'; sleep 0.5; echo '10::{key}:600|D'"})
    assert result(r, job)["state"] == "SUCCESS"
    state = wait_for(lambda: client.aggregator.query(key).get(key, {}).get("last_value") == 600
                     and client.aggregator.query(key)[key], what="the second value")
    sample = state["current"]["60"]
    assert state["op"] == "D" and sample["count"] == 1
    assert 500 / 0.7 < sample["avg"] < 500 / 0.45  # 500 over the ~0.5 s between the two lines


def test_a_closed_period_goes_to_history_and_to_the_statistics_list(r: Any, client: Any) -> None:
    key = f"test.closed.{uuid.uuid4().hex[:6]}"
    job = push(r, "bash", {"script": f"echo '10::{key}:7|A'"})
    result(r, job)
    def closed() -> list[dict[str, Any]]:
        return (client.aggregator.query(key).get(key) or {}).get("history", {}).get(str(PERIOD))

    state = wait_for(closed, timeout=3 * PERIOD + 5, what="the period closed")
    assert state[-1]["count"] == 1 and state[-1]["avg"] == 7 and state[-1]["start"] % PERIOD == 0
    points = [json.loads(x) for x in r.lrange(f"statistics:{PERIOD}", 0, -1)]
    mine = [p for p in points if p["key"] == key]
    assert mine == [{"key": key, "tags": {}, "avg": 7.0, "total": 7.0, "max": 7.0, "count": 1,
                     "start": state[-1]["start"]}]


def test_core0_samples_the_node_itself(client: Any, agg_node: dict[str, Any]) -> None:
    # A link in the node's own network namespace (the sandbox has only lo, which is not counted);
    # deleting one end of the veth pair deletes both.
    pid1 = host_pid(agg_node["pid"], 1)
    link = f"g8t{uuid.uuid4().hex[:6]}"
    netns = ["nsenter", f"--net=/proc/{pid1}/ns/net", "ip", "link"]
    subprocess.run([*netns, "add", link, "type", "veth", "peer", "name", f"{link}p"], check=True)
    try:
        subprocess.run([*netns, "set", link, "up"], check=True)
        subprocess.run([*netns, "set", f"{link}p", "up"], check=True)

        def complete() -> dict[str, Any]:
            found = client.aggregator.query()
            wanted = ["machine.CPU.percent/0", "machine.memory.ram.available", "machine.process.threads",
                      f"network.packets.rx/{link}", "machine.CPU.contextswitch"]
            rated = found.get("machine.CPU.contextswitch", {}).get("current", {}).get("60", {})
            return found if all(w in found for w in wanted) and rated.get("count") else {}

        found = wait_for(complete, timeout=15, what="core0's own metrics")
    finally:
        subprocess.run([*netns, "del", link], check=False)
    memory = found["machine.memory.ram.available"]
    assert memory["op"] == "A" and memory["tags"] == {"type": "phys"} and memory["last_value"] > 1  # MiB
    assert found["machine.CPU.percent/0"]["tags"] == {"id": "0", "type": "phys"}
    assert found["machine.CPU.utilisation/0"]["op"] == "D"
    assert found["machine.CPU.contextswitch"]["current"]["60"]["avg"] > 0  # switches per second
    assert found[f"network.packets.rx/{link}"]["op"] == "D"
    assert any(name.startswith("disk.size.total/") for name in found)


def test_the_state_survives_a_stats_actor_restart(r: Any, client: Any) -> None:
    key = f"test.kept.{uuid.uuid4().hex[:6]}"
    result(r, push(r, "bash", {"script": f"echo '10::{key}:3|A'; echo '10::{key}:5|A'"}))
    wait_for(lambda: client.aggregator.query(key), what="the metric")
    # saved at the end of each period: wait for one
    wait_for(lambda: key.encode() in (r.get("g8os:aggregator:state") or b""), timeout=3 * PERIOD + 5,
             what="the state saved")
    pid = client.actor.tree("/stats")["pid"]
    client.actor.kill("/stats")
    wait_for(lambda: client.actor.tree("/stats").get("pid") not in (None, pid)
             and client.actor.tree("/stats")["state"] == "running", timeout=20, what="a new /stats")
    state = client.aggregator.query(key)[key]
    assert state["last_value"] == 5 and state["current"]["60"]["count"] == 2


@pytest.mark.parametrize("arguments, field", [
    ({"key": 5}, "arguments.key"),
    ({"tags": {"a": 1}}, "arguments.tags"),
    ({"tags": ["a"]}, "arguments.tags"),
])
def test_bad_arguments_are_400_naming_the_field(r: Any, arguments: dict[str, Any], field: str) -> None:
    res = call(r, "aggregator.query", arguments)
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert field in json.loads(res["data"])
