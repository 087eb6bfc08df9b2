"""logger.*: the node log on a sandbox node, through the wire and the client.

Every job's messages (with their levels) and core0's own records go to the lists of subscribers,
filtered by level, bounded, with the backlog first; subscriptions and the verbosity survive a
restart of the LogActor; logger.reopen reopens the file log after a rotation.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wire import call, push, result, wait_for

from g8os.client.logger import LogRecord

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(node: Any) -> Iterator[Any]:
    with node.client() as c:
        yield c


@pytest.fixture
def subscriptions(client: Any) -> Iterator[list[str]]:
    """Lists this test subscribed; unsubscribed and deleted afterwards, whatever happened."""
    made: list[str] = []
    yield made
    for name in made:
        try:
            client.logger.unsubscribe(name)
        except Exception:
            pass  # the test unsubscribed it already
        client.connection.call("delete", name)


def logged(client: Any, job: str) -> None:
    """Wait until the node log has all of `job`: the JobSupervisor sends a job's output and its
    events in the same batch, and the events are in the stream once the log actor has had both."""
    wait_for(lambda: client.events.list(path=f"/jobs/{job}", topic="/job/end")["events"],
             what="the job's end in the node log")


def records(r: Any, name: str) -> list[LogRecord]:
    return [LogRecord.from_json(x) for x in r.lrange(name, 0, -1)]


def job_records(r: Any, name: str, job: str) -> list[LogRecord]:
    return [x for x in records(r, name) if x.job == job]


def test_subscribe_gets_every_message_of_every_job_with_its_level(r: Any, subscriptions: list[str]) -> None:
    reply = call(r, "logger.subscribe", {"queue": f"t-{uuid.uuid4().hex[:8]}"})
    assert reply["state"] == "SUCCESS" and reply["level"] == 20
    name = json.loads(reply["data"])
    subscriptions.append(name)
    assert name.startswith("logger:t-")
    job = push(r, "bash", {"script": "echo out; echo err >&2; echo '7::careful'; "
                                     "printf '6:::\\n{\"a\":\\n 1}\\n:::\\n'"})
    assert result(r, job)["state"] == "SUCCESS"
    wait_for(lambda: any(x.end for x in job_records(r, name, job)), what="the job's end record")
    mine = job_records(r, name, job)
    assert sorted((x.level, x.text) for x in mine if not x.end) == [
        (1, "out"), (2, "err"), (6, '{"a":\n 1}'), (7, "careful")]
    assert [x.end for x in mine] == [False] * 4 + [True]  # the end comes last
    assert (mine[-1].level, mine[-1].flags, mine[-1].text) == (1, 0x2, "")
    # the wire format is the stream entry's: {"core", "command", "message": {message, epoch, meta}}
    raw = json.loads(next(x for x in r.lrange(name, 0, -1) if b"careful" in x))
    assert raw["core"] == 0 and raw["command"] == job and set(raw) == {"core", "command", "message"}
    assert raw["message"]["meta"] == 7 << 16 and raw["message"]["epoch"] > 1_600_000_000 * 10**9


def test_levels_filter_and_every_job_end_passes(r: Any, client: Any, subscriptions: list[str]) -> None:
    name = client.logger.subscribe(f"t-{uuid.uuid4().hex[:8]}", 7, 9)
    subscriptions.append(name)
    job = push(r, "bash", {"script": "echo plain; echo '7::warned'; echo '9::fatal'; echo '5::log'; exit 3"})
    assert result(r, job)["code"] == 1003
    wait_for(lambda: any(x.end for x in job_records(r, name, job)), what="the job's end record")
    mine = job_records(r, name, job)
    assert [(x.level, x.text) for x in mine if not x.end] == [(7, "warned"), (9, "fatal")]
    assert (mine[-1].level, mine[-1].flags) == (2, 0x4)  # a failed job's end: level 2, error flag


def test_a_new_subscription_starts_with_the_backlog(r: Any, client: Any, subscriptions: list[str]) -> None:
    marker = f"before-{uuid.uuid4().hex}"
    job = push(r, "bash", {"script": f"echo {marker}; echo '7::not wanted'; exit 4"})
    result(r, job)
    logged(client, job)
    name = client.logger.subscribe(None, 1)  # a generated queue name
    subscriptions.append(name)
    assert name.startswith("logger:") and len(name) > len("logger:") + 8
    # the backlog is in the list as soon as subscribe answers
    assert any(x.text == marker for x in records(r, name))
    assert all(x.level == 1 or x.end for x in records(r, name))  # ends pass any filter
    assert [(x.level, x.flags) for x in job_records(r, name, job)] == [(1, 0), (2, 0x4)]


def test_subscribing_again_changes_the_levels_without_a_second_backlog(
        r: Any, client: Any, subscriptions: list[str]) -> None:
    name = client.logger.subscribe(f"t-{uuid.uuid4().hex[:8]}", 4)
    subscriptions.append(name)
    before = r.llen(name)
    assert client.logger.subscribe(name, 8) == name
    assert r.llen(name) == before
    job = push(r, "bash", {"script": "echo '4::operator'; echo '8::ops'"})
    result(r, job)
    wait_for(lambda: any(x.end for x in job_records(r, name, job)), what="the job's end record")
    assert [x.text for x in job_records(r, name, job) if not x.end] == ["ops"]


def test_unsubscribe_stops_the_copy_and_lets_the_list_expire(r: Any, client: Any,
                                                             subscriptions: list[str]) -> None:
    queue = f"t-{uuid.uuid4().hex[:8]}"
    name = client.logger.subscribe(queue)
    subscriptions.append(name)
    assert client.logger.unsubscribe(queue) is True  # the name without its prefix works too
    assert 0 < r.ttl(name) <= 300
    job = push(r, "bash", {"script": "echo after"})
    result(r, job)
    logged(client, job)
    marker = client.logger.subscribe(f"t-{uuid.uuid4().hex[:8]}")  # a witness: its backlog has the job
    subscriptions.append(marker)
    assert any(x.job == job for x in records(r, marker))
    assert not job_records(r, name, job)
    missing = call(r, "logger.unsubscribe", {"queue": name})
    assert missing["code"] == 404 and name in json.loads(missing["data"])


def test_lists_are_bounded(r: Any, client: Any, subscriptions: list[str]) -> None:
    name = client.logger.subscribe(f"t-{uuid.uuid4().hex[:8]}", 1)
    subscriptions.append(name)
    job = push(r, "bash", {"script": "seq 1 10500"})
    assert result(r, job)["state"] == "SUCCESS"
    last = wait_for(lambda: [x for x in job_records(r, name, job) if x.text == "10500"], what="last line")
    assert last
    assert r.llen(name) == 10_000
    texts = [x.text for x in job_records(r, name, job) if not x.end]
    assert texts[-1] == "10500" and texts[0] == str(10500 - len(texts) + 1)  # the oldest went first


def test_core0_records_follow_the_verbosity(r: Any, client: Any, subscriptions: list[str]) -> None:
    name = client.logger.subscribe(f"t-{uuid.uuid4().hex[:8]}", 11)  # debug records
    subscriptions.append(name)
    try:
        assert client.logger.set_level("debug") == {"level": "DEBUG", "previous": "INFO"}
        job = push(r, "bash", {"script": "true"})
        result(r, job)
        # core0's debug records include the job's start and end events, about the job's path
        found = wait_for(lambda: [x for x in records(r, name) if x.core0 and x.path == f"/jobs/{job}"],
                         what="core0's debug records of the job")
        assert {x.text.split()[1] for x in found} >= {"/job/start"}
        assert all(x.job == "core0" and x.level == 11 for x in found)
    finally:
        assert client.logger.set_level("INFO")["previous"] == "DEBUG"
    job = push(r, "bash", {"script": "true"})
    result(r, job)
    # The log actor writes an event to the stream and decides its record in the same step: once
    # the job's end is in the stream, its records would be in the list.
    logged(client, job)
    assert not [x for x in records(r, name) if x.path == f"/jobs/{job}"]


def test_subscriptions_and_verbosity_survive_a_log_actor_restart(
        r: Any, client: Any, subscriptions: list[str]) -> None:
    name = client.logger.subscribe(f"t-{uuid.uuid4().hex[:8]}", 1)
    subscriptions.append(name)
    client.logger.set_level("WARNING")
    try:
        before = client.actor.tree("/log")["pid"]
        client.actor.kill("/log")
        wait_for(lambda: client.actor.tree("/log").get("pid") not in (None, before)
                 and client.actor.tree("/log")["state"] == "running", timeout=20, what="a new /log")
        assert client.actor.tree("/log")["level"] == "WARNING"
        job = push(r, "bash", {"script": "echo still-here"})
        result(r, job)
        wait_for(lambda: any(x.text == "still-here" for x in job_records(r, name, job)),
                 what="records after the restart")
    finally:
        client.logger.set_level("INFO")


def test_reopen_after_rotation(node: Any, r: Any, client: Any) -> None:
    log = Path("/var/lib/g8os/sandbox") / node.name / "core0.log"
    rotated = log.with_name(f"core0.log.{uuid.uuid4().hex[:6]}")
    os.rename(log, rotated)
    try:
        assert client.logger.reopen() is True
        wait_for(log.exists, what="a new log file")
        job = push(r, "bash", {"script": "echo '8::after-rotation' >&2"})  # level 8 goes to the file
        result(r, job)
        wait_for(lambda: "after-rotation" in log.read_text(), what="the line in the new file")
        assert "after-rotation" not in rotated.read_text()
    finally:
        rotated.unlink(missing_ok=True)


@pytest.mark.parametrize("command, arguments, field", [
    ("logger.subscribe", {"levels": [1, 99]}, "arguments.levels"),
    ("logger.subscribe", {"levels": "1"}, "arguments.levels"),
    ("logger.subscribe", {"queue": "two words"}, "arguments.queue"),
    ("logger.subscribe", {"queue": 5}, "arguments.queue"),
    ("logger.unsubscribe", {}, "arguments.queue"),
    ("logger.unsubscribe", {"queue": ""}, "arguments.queue"),
    ("logger.set_level", {"level": "LOUD"}, "arguments.level"),
    ("logger.set_level", {}, "arguments.level"),
])
def test_bad_arguments_are_400_naming_the_field(r: Any, command: str, arguments: dict[str, Any],
                                                field: str) -> None:
    res = call(r, command, arguments)
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert field in json.loads(res["data"])
