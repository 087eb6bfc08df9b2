"""The G8OS wire protocol, spoken by hand against a sandbox node (PROTOCOL.md, point by point)."""

from __future__ import annotations

import itertools
import json
import time
import uuid

import attrs
import pytest
from wire import call, push, result, stream, wait_for

from g8os.messages import registry

pytestmark = pytest.mark.timeout(90)


def test_ping_answers_pong_at_level_20(r):
    res = call(r, "core.ping")
    assert res["state"] == "SUCCESS" and res["code"] == 0 and res["level"] == 20
    assert json.loads(res["data"]).startswith("PONG ")


def test_flag_and_result_ttls(r):
    job = push(r, "bash", {"script": "sleep 0.3"})
    assert wait_for(lambda: r.exists(f"result:{job}:flag"), what="flag")
    assert r.ttl(f"result:{job}:flag") == -1  # running
    result(r, job)
    assert 0 < r.ttl(f"result:{job}") <= 300
    assert 0 < r.ttl(f"result:{job}:flag") <= 300


def test_result_can_be_read_again(r):
    job = push(r, "core.ping")
    assert result(r, job) == result(r, job)


def test_duplicate_id_is_dropped(r):
    job = push(r, "bash", {"script": "echo first"})
    first = result(r, job)
    push(r, "bash", {"script": "echo second"}, id=job)
    probe = call(r, "core.ping")  # once the probe is answered, the duplicate was judged
    assert probe["state"] == "SUCCESS"
    assert r.llen(f"result:{job}") == 1
    assert result(r, job) == first


def test_missing_id_is_dropped_and_node_keeps_serving(r):
    r.rpush("core:default", json.dumps({"command": "core.ping", "arguments": {}}))
    r.rpush("core:default", json.dumps({"id": "", "command": "core.ping"}))
    r.rpush("core:default", b"{not json")
    r.rpush("core:default", json.dumps([1, 2, 3]))
    r.rpush("core:default", b"\xff\xfe garbage")
    assert call(r, "core.ping")["state"] == "SUCCESS"


def test_unknown_command(r):
    res = call(r, "no.such.command")
    assert res["state"] == "UNKNOWN_CMD"
    assert "no.such.command" in json.loads(res["data"])


@pytest.mark.parametrize("arguments, field", [
    ({"name": 42}, "arguments.name"),
    ({"name": "ls", "args": "-l"}, "arguments.args"),
    ({"name": "ls", "args": ["-l", 3]}, "arguments.args[1]"),
    ({"name": "ls", "env": {"A": 1}}, "arguments.env"),
    ({}, "arguments.name"),
])
def test_bad_arguments_are_400_naming_the_field(r, arguments, field):
    res = call(r, "core.system", arguments)
    assert res["state"] == "ERROR" and res["code"] == 400 and res["level"] == 20
    assert field in json.loads(res["data"])


@pytest.mark.parametrize("fields, field", [
    ({"max_time": "soon"}, "max_time"),
    ({"stream": "yes"}, "stream"),
    ({"tags": [1]}, "tags"),
    ({"queue": 5}, "queue"),
])
def test_bad_envelope_fields_are_400(r, fields, field):
    res = call(r, "core.ping", **fields)
    assert res["code"] == 400 and field in json.loads(res["data"])


def test_arguments_not_an_object(r):
    res = call(r, "core.system", ["ls"])  # type: ignore[arg-type]
    assert res["code"] == 400


def test_huge_payload_gets_400(r):
    res = call(r, "bash", {"script": "x" * (9 * 1024 * 1024)}, timeout=60)
    assert res["code"] == 400 and "limit" in json.loads(res["data"])


def test_system_stdout_stderr_and_exit_code(r):
    res = call(r, "bash", {"script": "echo out; echo err >&2; exit 3"})
    assert res["state"] == "ERROR" and res["code"] == 1003
    assert res["streams"] == ["out", "err"]


def test_binary_not_found_is_404(r):
    res = call(r, "core.system", {"name": "/no/such/binary"})
    assert res["state"] == "ERROR" and res["code"] == 404


def test_signal_death_is_999(r):
    res = call(r, "bash", {"script": "kill -9 $$"})
    assert res["code"] == 999


def test_result_level_and_critical(r):
    script = 'echo plain; echo \'20::{"answer": 42}\'; echo "9::it broke"; printf "20:::\\n[1,\\n2]\\n:::\\n"'
    res = call(r, "bash", {"script": script})
    assert res["level"] == 20 and json.loads(res["data"]) == [1, 2]
    assert res["critical"] == "it broke"
    assert res["streams"][0] == "plain"


def test_streams_keep_last_100_lines(r):
    res = call(r, "bash", {"script": "seq 1 250"})
    lines = res["streams"][0].splitlines()
    assert len(lines) == 100 and lines[0] == "151" and lines[-1] == "250"


def test_stdin_env_and_dir(r):
    res = call(r, "core.system", {"name": "sh", "args": ["-c", "cat; echo $FOO; pwd"], "stdin": "in\n",
                                  "env": {"FOO": "bar"}, "dir": "/tmp"})
    assert res["streams"][0] == "in\nbar\n/tmp"


def test_bad_dir_is_400(r):
    res = call(r, "core.system", {"name": "true", "dir": "/no/such/dir"})
    assert res["code"] == 400


def test_tags_are_echoed(r):
    res = call(r, "core.ping", tags=["a", "b"])
    assert res["tags"] == ["a", "b"]


def test_max_time_is_timeout(r):
    res = call(r, "bash", {"script": "sleep 30"}, max_time=1)
    assert res["state"] == "TIMEOUT"
    assert res["time"] < 5000


def test_stream_carries_levels_and_end_flag(r):
    job = push(r, "bash", {"script": "echo a; echo b >&2; echo '3::note'"}, stream=True)
    res = result(r, job)
    entries = stream(r, job)
    metas = [(e["message"]["meta"] >> 16, e["message"]["message"]) for e in entries]
    assert (1, "a") in metas and (2, "b") in metas and (3, "note") in metas
    last = entries[-1]["message"]["meta"]
    assert last & 0x2 and last >> 16 == 1
    assert res["state"] == "SUCCESS"
    assert all(e["command"] == job and e["core"] == 0 for e in entries)
    assert 0 < r.ttl(f"stream:{job}") <= 60


def test_stream_end_flag_on_failure(r):
    job = push(r, "bash", {"script": "exit 1"}, stream=True)
    result(r, job)
    last = stream(r, job)[-1]["message"]["meta"]
    assert last & 0x4 and last >> 16 == 2


def test_builtin_stream_ends_with_its_result(r):
    job = push(r, "core.ping", stream=True)
    result(r, job)
    last = stream(r, job)[-1]["message"]
    assert last["meta"] >> 16 == 20 and last["meta"] & 0x2


def test_queue_runs_jobs_one_after_another(r):
    queue = f"q-{uuid.uuid4().hex[:6]}"
    script = "date +%s%N; sleep 0.2; date +%s%N"
    jobs = [push(r, "bash", {"script": script}, queue=queue) for _ in range(3)]
    spans = []
    for job in jobs:
        out = result(r, job)["streams"][0].split()
        spans.append((int(out[0]), int(out[1])))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end


def test_max_restart_reruns_failures(r, shared_dir):
    counter = shared_dir / "runs"
    res = call(r, "bash", {"script": f"echo x >> {counter}; exit 1"}, max_restart=3)
    assert res["state"] == "ERROR"
    assert counter.read_text().count("x") == 3


def test_max_restart_stops_at_success(r, shared_dir):
    counter = shared_dir / "runs"
    script = f"echo x >> {counter}; [ $(wc -l < {counter}) -ge 2 ]"
    res = call(r, "bash", {"script": script}, max_restart=5)
    assert res["state"] == "SUCCESS"
    assert counter.read_text().count("x") == 2


def test_recurring_until_unschedule(r, shared_dir):
    counter = shared_dir / "runs"
    job = push(r, "bash", {"script": f"echo x >> {counter}"}, recurring_period=1)
    wait_for(lambda: counter.exists() and counter.read_text().count("x") >= 2, timeout=10, what="2 runs")
    assert not r.exists(f"result:{job}")  # a recurring job has no result until it stops
    assert call(r, "job.unschedule", {"id": job})["state"] == "SUCCESS"
    assert result(r, job)["state"] == "SUCCESS"


def test_job_list_and_kill_whole_group(r):
    job = push(r, "bash", {"script": "sleep 60 & sleep 60 & wait"})
    wait_for(lambda: any(j["id"] == job for j in json.loads(call(r, "job.list")["data"])), what="listed")
    listed = json.loads(call(r, "job.list", {"id": job})["data"])
    assert listed[0]["pid"] and listed[0]["cmd"]["command"] == "bash"
    assert call(r, "job.kill", {"id": job, "signal": 9})["state"] == "SUCCESS"
    res = result(r, job)
    assert res["state"] == "KILLED"
    pids = json.loads(call(r, "process.list")["data"])
    assert not [p for p in pids if p["name"] == "sleep" and p["ppid"] == listed[0]["pid"]]


def test_job_kill_unknown_is_404(r):
    assert call(r, "job.kill", {"id": "nope"})["code"] == 404


def test_subscribe_follows_a_running_job(r):
    job = push(r, "bash", {"script": "echo one; sleep 1; echo two"})
    wait_for(lambda: r.exists(f"result:{job}:flag"))
    sub = push(r, "core.subscribe", {"id": job}, stream=True)
    res = result(r, sub)
    assert res["state"] == "SUCCESS"
    texts = [e["message"]["message"] for e in stream(r, sub)]
    assert "two" in texts


def test_subscribe_sent_with_its_job_waits_for_it(r):
    # The job and its subscription in one pipeline: the subscription (a call) may reach the
    # JobSupervisor before the job (through its queue) does.
    for _ in range(10):
        job, sub = str(uuid.uuid4()), str(uuid.uuid4())
        pipe = r.pipeline(transaction=False)
        pipe.rpush("core:default", json.dumps({"id": job, "command": "bash",
                                               "arguments": {"script": "echo hello; sleep 0.2; echo bye"}}))
        pipe.rpush("core:default", json.dumps({"id": sub, "command": "core.subscribe",
                                               "arguments": {"id": job}, "stream": True}))
        pipe.execute()
        res = result(r, sub)
        assert res["state"] == "SUCCESS", res
        assert json.loads(res["data"]) == {"id": job, "state": "SUCCESS"}
        assert "bye" in [e["message"]["message"] for e in stream(r, sub)]


def test_a_subscription_that_came_first_is_attached_when_its_job_arrives(r):
    # That order, forced: the job's flag as the gateway's step writes it, the subscription, and
    # only once the JobSupervisor holds the subscription, the job itself in its queue.
    def pending() -> int:
        return json.loads(call(r, "actor.tree", {"path": "/jobs"})["data"])["pending_subscriptions"]

    job = str(uuid.uuid4())
    r.rpush(f"result:{job}:flag", "")
    sub = push(r, "core.subscribe", {"id": job}, stream=True)
    wait_for(lambda: pending() == 1, what="the subscription held")
    r.lpush("g8os:jobs:queue", json.dumps({"id": job, "command": "bash",
                                           "arguments": {"script": "echo early; sleep 0.2; echo late"}}))
    res = result(r, sub)
    assert res["state"] == "SUCCESS", res
    assert json.loads(res["data"]) == {"id": job, "state": "SUCCESS"}
    assert [e["message"]["message"] for e in stream(r, sub)][:2] == ["early", "late"]
    assert "late" in result(r, job)["streams"][0]
    assert pending() == 0


def test_subscribe_to_an_unknown_job_is_404_at_once(r):
    started = time.monotonic()
    assert call(r, "core.subscribe", {"id": "no-such-job"})["code"] == 404
    assert time.monotonic() - started < 2


def test_subscribe_to_an_accepted_job_that_never_comes_is_404_in_the_end(r):
    # The job's flag without the job: what a job lost between the gateway and the JobSupervisor
    # would look like. The subscription waits for it a while, then says it does not exist.
    ghost = str(uuid.uuid4())
    r.rpush(f"result:{ghost}:flag", "")
    try:
        started = time.monotonic()
        res = call(r, "core.subscribe", {"id": ghost}, timeout=20)
        assert res["code"] == 404 and ghost in res["data"]
        assert 4 <= time.monotonic() - started < 15
    finally:
        r.delete(f"result:{ghost}:flag")


def test_info_commands(r):
    for name in ("info.cpu", "info.mem", "info.disk", "info.nic", "info.os", "info.port", "info.version"):
        res = call(r, name)
        assert res["state"] == "SUCCESS" and res["level"] == 20, name
    nics = json.loads(call(r, "info.nic")["data"])
    assert [n["name"] for n in nics] == ["lo"]  # the node's own network namespace


def test_process_kill_refuses_core0_itself(r):
    res = call(r, "process.kill", {"pid": 1})
    assert res["code"] == 412


def test_unexecutable_name_is_400_and_the_node_keeps_serving(r):
    res = call(r, "core.system", {"name": "/etc/passwd/x"})  # ENOTDIR at exec time
    assert res["code"] == 400 and "arguments.name" in json.loads(res["data"])
    assert call(r, "bash", {"script": "echo still here"})["streams"][0] == "still here"


def test_killing_a_queued_job_says_why(r):
    queue = f"q-{uuid.uuid4().hex[:6]}"
    first = push(r, "bash", {"script": "sleep 30"}, queue=queue)
    second = push(r, "bash", {"script": "echo never"}, queue=queue)
    wait_for(lambda: any(j["id"] == second for j in json.loads(call(r, "job.list")["data"])))
    assert call(r, "job.kill", {"id": second})["state"] == "SUCCESS"
    res = result(r, second)
    assert res["state"] == "KILLED" and "not running" in res["critical"]
    call(r, "job.kill", {"id": first, "signal": 9})
    assert result(r, first)["state"] == "KILLED"


def test_a_subscriber_can_be_killed(r):
    job = push(r, "bash", {"script": "sleep 30"})
    wait_for(lambda: r.exists(f"result:{job}:flag"))
    wait_for(lambda: any(j["id"] == job for j in json.loads(call(r, "job.list")["data"])))
    sub = push(r, "core.subscribe", {"id": job}, stream=True)
    wait_for(lambda: r.exists(f"result:{sub}:flag"))
    assert call(r, "job.kill", {"id": sub})["state"] == "SUCCESS"
    assert result(r, sub)["state"] == "SUCCESS"
    call(r, "job.kill", {"id": job, "signal": 9})
    assert result(r, job)["state"] == "KILLED"


def test_a_flood_of_duplicates_gets_one_result(r):
    job = str(uuid.uuid4())
    body = json.dumps({"id": job, "command": "bash", "arguments": {"script": "echo once"}})
    pipe = r.pipeline(transaction=False)
    for _ in range(500):
        pipe.rpush("core:default", body)
    pipe.execute()
    assert result(r, job)["streams"][0] == "once"
    assert call(r, "core.ping")["state"] == "SUCCESS"  # every duplicate was judged by now
    assert r.llen(f"result:{job}") == 1
    assert r.llen("g8os:gateway:inflight") == 0 or wait_for(lambda: r.llen("g8os:gateway:inflight") == 0)


def test_killall_spares_nothing_it_should_not(r):
    jobs = [push(r, "bash", {"script": "sleep 30"}) for _ in range(3)]
    wait_for(lambda: {j["id"] for j in json.loads(call(r, "job.list")["data"])} >= set(jobs))
    killed = json.loads(call(r, "job.killall", {"signal": 9})["data"])
    assert set(jobs) <= set(killed)
    for job in jobs:
        assert result(r, job)["state"] == "KILLED"
    redis_up = call(r, "core.ping")  # services are not jobs: redis-server is untouched
    assert redis_up["state"] == "SUCCESS"


@pytest.mark.parametrize("command, arguments, field", [
    ("bash", {"script": 1}, "arguments.script"),
    ("core.subscribe", {"id": ["x"]}, "arguments.id"),
    ("job.list", {"id": 5}, "arguments.id"),
    ("job.kill", {"id": "x", "signal": "KILL"}, "arguments.signal"),
    ("job.killall", {"signal": 1.5}, "arguments.signal"),
    ("job.unschedule", {}, "arguments.id"),
    ("process.list", {"pid": "one"}, "arguments.pid"),
    ("process.kill", {"pid": -4}, "arguments.pid"),
    ("actor.tree", {"path": "no-slash"}, "arguments.path"),
    ("actor.inspect", {"path": "/a/../b"}, "arguments.path"),
    ("actor.kill", {"path": "/jobs", "signal": 0.5}, "arguments.signal"),
    ("actor.restart", {}, "arguments.path"),
])
def test_every_command_names_its_bad_field(r, command, arguments, field):
    res = call(r, command, arguments)
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert field in json.loads(res["data"])


NO_FIELDS = sorted(name for name, info in registry.load().items() if not attrs.fields(info.request))


@pytest.mark.parametrize("command", NO_FIELDS)
def test_commands_without_fields_refuse_arguments_that_are_not_an_object(r, command):
    """The commands above have fields to get wrong; these have none, so what can be wrong is the
    arguments themselves."""
    res = call(r, command, ["not", "an", "object"])
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert "arguments" in json.loads(res["data"])
