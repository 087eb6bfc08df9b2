"""events.list and the stream g8os:events on a sandbox node: jobs' and actors' state changes,
in order, filtered, paged, followed."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from wire import call, push, result, wait_for

from g8os.boot import sandbox

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(node: Any) -> Iterator[Any]:
    with node.client() as c:
        yield c


def events(client: Any, **filters: Any) -> list[dict[str, Any]]:
    return client.events.list(**filters)["events"]


def topics(found: list[dict[str, Any]]) -> list[str]:
    return [e["topic"] for e in found]


def test_a_job_starts_and_ends(r: Any, client: Any) -> None:
    job = push(r, "bash", {"script": "exit 2"})
    assert result(r, job)["code"] == 1002
    found = wait_for(lambda: [e for e in events(client, path=f"/jobs/{job}") if e["topic"] == "/job/end"]
                     and events(client, path=f"/jobs/{job}"), what="the job's events")
    assert topics(found) == ["/job/start", "/job/end"]
    start, end = found
    assert start["data"]["run"] == 1 and start["data"]["command"] == "bash" and start["data"]["pid"] > 1
    assert end["data"] == {"state": "ERROR", "code": 1002}
    assert start["ts"] <= end["ts"] and start["id"] < end["id"]
    # the id is the event's own time (milliseconds), so `since` can be a time too
    assert int(end["id"].split("-")[0]) == int(end["ts"] * 1000)


def test_actor_kill_gives_exited_then_restarted_in_order(client: Any) -> None:
    since = time.time()
    pid = client.actor.tree("/stats")["pid"]
    client.actor.kill("/stats")

    def settled() -> list[dict[str, Any]]:
        found = events(client, since=since, topic="/actor")
        return found if "/actor/ready" in topics([e for e in found if e["path"] == "/stats"]) else []

    found = wait_for(settled, timeout=20, what="/stats restarted and ready")
    sequence = [(e["topic"], e["path"]) for e in found]
    assert sequence == [("/actor/exited", "/stats"), ("/actor/restarting", "/"),
                        ("/actor/restarted", "/stats"), ("/actor/started", "/stats"),
                        ("/actor/ready", "/stats")]
    exited = found[0]["data"]
    assert exited["reason"] == "killed by actor.kill (signal 9)" and exited["normal"] is False
    assert exited["pid"] == pid and found[-1]["data"]["pid"] != pid
    assert [e["ts"] for e in found] == sorted(e["ts"] for e in found)
    ids = [tuple(map(int, e["id"].split("-"))) for e in found]
    assert ids == sorted(ids)


def test_a_restarted_job_says_why(r: Any, client: Any) -> None:
    job = push(r, "bash", {"script": "echo once; exit 1"}, max_restart=2)
    assert result(r, job)["state"] == "ERROR"
    found = wait_for(lambda: [e for e in events(client, path=f"/jobs/{job}")
                              if e["topic"] == "/job/end"] and events(client, path=f"/jobs/{job}"),
                     what="the job's events")
    assert topics(found) == ["/job/start", "/job/restarting", "/job/start", "/job/end"]
    assert [e["data"]["run"] for e in found if e["topic"] == "/job/start"] == [1, 2]
    assert "exited with status 1" in found[1]["data"]["reason"]


def test_filters_limit_and_since(r: Any, client: Any) -> None:
    jobs = [push(r, "bash", {"script": "true"}) for _ in range(3)]
    for job in jobs:
        result(r, job)
    last = jobs[-1]
    wait_for(lambda: events(client, path=f"/jobs/{last}", topic="/job/end"), what="the last job's end")
    # topic and path are prefixes segment by segment: /job takes /job/end, not /jobs/...
    ends = events(client, topic="/job/end", limit=3)
    assert [e["path"] for e in ends] == [f"/jobs/{j}" for j in jobs]
    assert {e["topic"] for e in events(client, topic="/job", limit=50)} <= {
        "/job/start", "/job/end", "/job/restarting", "/job/restarted"}
    assert events(client, topic="/jo") == []  # not a segment of any topic
    assert all(e["path"] == "/jobs" or e["path"].startswith("/jobs/")
               for e in events(client, path="/jobs", limit=50))
    assert events(client, path="/job") == []
    # since an id is exclusive; `last` continues where the page stopped, skipped events included
    first = events(client, path=f"/jobs/{jobs[0]}")[0]
    page = client.events.list(since=first["id"], path="/jobs", limit=2)
    assert len(page["events"]) == 2 and first["id"] not in [e["id"] for e in page["events"]]
    rest = client.events.list(since=page["last"], path="/jobs", limit=100)
    assert {e["path"] for e in page["events"] + rest["events"]} >= {f"/jobs/{j}" for j in jobs}
    assert not {e["id"] for e in page["events"]} & {e["id"] for e in rest["events"]}
    # since a time: what happened after it; epoch seconds as a number or as text
    assert [e["id"] for e in client.events.list(since=first["ts"])["events"]][:1] != [first["id"]]
    assert events(client, since=str(first["ts"] - 0.0005), path=f"/jobs/{jobs[0]}")[0]["id"] == first["id"]
    # nothing after the newest: an empty page whose cursor stays put
    newest = client.events.list(limit=1)
    assert client.events.list(since=newest["last"])["events"] == []


def test_follow_reads_new_events_as_they_come(r: Any, client: Any) -> None:
    """The first job's events come from what the stream holds after `since`; the second job is
    pushed only once the first one's end was read, so its events reach a follower already
    waiting in XREAD."""
    first, second = (f"follow-{uuid.uuid4().hex[:8]}" for _ in range(2))
    since = time.time()
    push(r, "bash", {"script": "true"}, id=first)
    seen: list[dict[str, Any]] = []
    follower = client.events.follow(since=since, topic="/job", timeout=30)
    try:
        for event in follower:
            if event["path"] not in (f"/jobs/{first}", f"/jobs/{second}"):
                continue
            seen.append(event)
            if event["topic"] == "/job/end":
                if event["path"] == f"/jobs/{second}":
                    break
                push(r, "bash", {"script": "true"}, id=second)
    finally:
        follower.close()
    assert [(e["path"].rsplit("/", 1)[1], e["topic"]) for e in seen] == [
        (first, "/job/start"), (first, "/job/end"), (second, "/job/start"), (second, "/job/end")]
    # and from a time in the past: the stream's content first, then new ones
    again = []
    for event in client.events.follow(since=seen[2]["ts"] - 0.001, path=f"/jobs/{second}", timeout=30):
        again.append(event)
        if event["topic"] == "/job/end":
            break
    assert [e["id"] for e in again] == [e["id"] for e in seen[2:]]


def test_the_stream_is_bounded() -> None:
    # A node of its own that keeps about 100 events; 400 job events go through it.
    name = f"evb-{os.getpid() % 100000}-{uuid.uuid4().hex[:4]}"
    info = sandbox.up(name, detach=True, timeout=90, settings={"events_length": 100})
    try:
        conn = redis.Redis(unix_socket_path=info["socket"], password=info["password"])
        first = wait_for(lambda: conn.xrange("g8os:events", count=1), what="the boot's events")[0]
        jobs = [push(conn, "bash", {"script": "true"}) for _ in range(200)]
        for job in jobs:
            result(conn, job)
        last = jobs[-1]
        wait_for(lambda: any(f"/jobs/{last}".encode() == fields[b"path"] and fields[b"topic"] == b"/job/end"
                             for _id, fields in conn.xrevrange("g8os:events", count=5)),
                 what="the last job's end")
        # MAXLEN ~ trims whole nodes of the stream (100 entries each): between 100 and 200 remain
        assert 100 <= conn.xlen("g8os:events") <= 200
        assert conn.xrange("g8os:events", count=1)[0][0] != first[0]  # the oldest went
        conn.close()
    finally:
        if sandbox.status(name)["state"] not in ("absent", "stale"):
            sandbox.down(name, timeout=60)


@pytest.mark.parametrize("arguments, field", [
    ({"since": "yesterday"}, "arguments.since"),
    ({"since": True}, "arguments.since"),
    ({"since": -5}, "arguments.since"),
    ({"topic": "actor"}, "arguments.topic"),
    ({"path": 3}, "arguments.path"),
    ({"limit": 0}, "arguments.limit"),
    ({"limit": 10_001}, "arguments.limit"),
])
def test_bad_arguments_are_400_naming_the_field(r: Any, arguments: dict[str, Any], field: str) -> None:
    res = call(r, "events.list", arguments)
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert field in json.loads(res["data"])
