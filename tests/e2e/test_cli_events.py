"""`g8os events` and `g8os logs -f` through the console script, against a real node.

`node` (from tests/conftest.py) has `host, port, password, socket, name` and `node.client()`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from wire import call, push, result, wait_for

from g8os.messages.errors import NotFound

pytestmark = pytest.mark.timeout(120)

G8OS = [sys.executable, "-m", "g8os.client.cli"]
CONNECTION_VARS = {"G8OS_HOST", "G8OS_PORT", "G8OS_PASSWORD", "G8OS_SOCKET", "G8OS_SANDBOX", "G8OS_CONNECT",
                   "G8OS_TIMEOUT"}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}


def command(node: Any, *args: str) -> list[str]:
    return [*G8OS, "--host", node.host, "--port", str(node.port), "--password", node.password, *args]


def g8os(node: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(node, *args), capture_output=True, text=True, env=clean_env(),
                          timeout=timeout)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    """Console scripts a test runs in the background: ended (by pid) whatever happens."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def events_of(r: Any, job: str) -> list[dict[str, Any]]:
    return json.loads(call(r, "events.list", {"path": f"/jobs/{job}"})["data"])["events"]


def ended(r: Any, job: str) -> None:
    """The job has its result and its end is in the events stream."""
    result(r, job)
    wait_for(lambda: [e for e in events_of(r, job) if e["topic"] == "/job/end"],
             what="the job's end in the events stream")


# ---- g8os events ---------------------------------------------------------------------------------


def test_events_table_and_json(node: Any, r: Any) -> None:
    job = push(r, "bash", {"script": "exit 3"})
    ended(r, job)
    table = g8os(node, "events", "--path", f"/jobs/{job}")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TIME", "TOPIC", "PATH", "DETAILS"]
    assert "/job/start" in lines[1] and f"/jobs/{job}" in lines[1] and "run=1" in lines[1]
    assert "/job/end" in lines[2] and "state=ERROR" in lines[2] and "code=1003" in lines[2]
    document = json.loads(g8os(node, "events", "--json", "--since", "10m", "--topic", "/job/end",
                               "--path", f"/jobs/{job}").stdout)
    assert [e["topic"] for e in document["events"]] == ["/job/end"]
    assert document["events"][0]["data"] == {"state": "ERROR", "code": 1003}
    # the cursor is the last event looked at, matching or not: this one or a later one
    def position(stream_id: str) -> tuple[int, ...]:
        return tuple(int(part) for part in stream_id.split("-"))

    assert position(document["last"]) >= position(document["events"][0]["id"])
    # the cursor, as --since: nothing after it for this job
    later = json.loads(g8os(node, "--json", "events", "--since", document["last"], "--path",
                            f"/jobs/{job}").stdout)
    assert later["events"] == []
    assert g8os(node, "events", "--path", "/no/such").stdout.strip() == "no events"


def test_events_bad_since_is_a_usage_error(node: Any) -> None:
    bad = g8os(node, "events", "--since", "yesterday")
    assert bad.returncode == 2
    assert "arguments.since" in bad.stderr
    document = json.loads(g8os(node, "--json", "events", "--since", "yesterday").stdout)
    assert document["error"]["field"] == "arguments.since" and document["error"]["code"] == 400


def test_events_follow_json_until_ctrl_c(node: Any, r: Any, spawned: list[subprocess.Popen[str]]) -> None:
    job = f"ev-{uuid.uuid4().hex[:8]}"
    # From a time just before the job: whether the follower reaches its XREAD before or after the
    # job's events are written, it shows them.
    since = f"{time.time():.3f}"
    follower = subprocess.Popen(command(node, "events", "-f", "--json", "--since", since,
                                        "--path", f"/jobs/{job}"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    spawned.append(follower)
    push(r, "bash", {"script": "echo hi"}, id=job)
    seen = []
    while not seen or seen[-1]["topic"] != "/job/end":
        line = follower.stdout.readline()
        assert line, follower.stderr.read()
        seen.append(json.loads(line))
    assert [e["topic"] for e in seen] == ["/job/start", "/job/end"]
    assert seen[1]["data"] == {"state": "SUCCESS", "code": 0}
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=10) == 0
    assert "Traceback" not in follower.stderr.read()


def test_events_follow_human_lines_for_an_actor_restart(node: Any, r: Any,
                                                        spawned: list[subprocess.Popen[str]]) -> None:
    since = f"{time.time():.3f}"  # the kill's events are after it, however late the follower starts
    follower = subprocess.Popen(command(node, "events", "-f", "--since", since, "--path", "/stats"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    spawned.append(follower)
    with node.client() as client:
        client.actor.kill("/stats")
    lines: list[str] = []
    while not any("/actor/ready" in line for line in lines):
        line = follower.stdout.readline()
        assert line, follower.stderr.read()
        lines.append(line)
    topics = [line.split()[1] for line in lines]
    assert topics == ["/actor/exited", "/actor/restarted", "/actor/started", "/actor/ready"]
    assert "reason=killed by actor.kill (signal 9)" in lines[0]
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=10) == 0


# ---- g8os logs -f across restarts -----------------------------------------------------------------


def runs_script(job: str, runs: int, pause: float) -> str:
    """A job that fails until its `runs`-th run (it counts them in the node's /tmp)."""
    counter = f"/tmp/runs-{job}"
    return (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
            f"echo \"run $n\"; echo \"warn $n\" >&2; sleep {pause}; echo \"done $n\"; [ $n -ge {runs} ]")


def test_logs_follow_continues_across_max_restart_runs(node: Any, r: Any) -> None:
    job = f"lf-{uuid.uuid4().hex[:8]}"
    push(r, "bash", {"script": runs_script(job, 3, 0.5)}, id=job, max_restart=3)
    wait_for(lambda: r.exists(f"result:{job}:flag"), what="the job accepted")
    followed = g8os(node, "logs", "-f", job)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == ["run 1", "done 1", "run 2", "done 2", "run 3", "done 3"]
    assert followed.stderr.splitlines() == ["warn 1", "warn 2", "warn 3"]
    assert result(r, job)["state"] == "SUCCESS"


def test_logs_follow_survives_the_job_supervisor_restart(node: Any, r: Any,
                                                         spawned: list[subprocess.Popen[str]]) -> None:
    job = f"lk-{uuid.uuid4().hex[:8]}"
    push(r, "bash", {"script": runs_script(job, 3, 1.5)}, id=job, max_restart=3)
    wait_for(lambda: r.exists(f"result:{job}:flag"), what="the job accepted")
    follower = subprocess.Popen(command(node, "logs", "-f", job), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=clean_env())
    spawned.append(follower)
    assert follower.stdout is not None
    # The follower has shown the first run's first line: only now is the JobSupervisor killed (the
    # job's process with it; the new JobSupervisor re-runs the job).
    assert follower.stdout.readline() == "run 1\n"
    with node.client() as client:
        client.actor.kill("/jobs")
    out, err = follower.communicate(timeout=90)
    assert follower.returncode == 0, err
    lines = ["run 1", *out.splitlines()]
    assert lines[-2:] == ["run 3", "done 3"]
    assert "done 1" not in lines  # that run was cut short
    assert len(lines) == len(set(lines))  # nothing shown twice after re-subscribing
    assert result(r, job)["state"] == "SUCCESS"


def _ended(client: Any, subscriber: str) -> bool:
    try:
        client.job.kill(subscriber)
    except NotFound:
        return False
    return True


def subscribers(r: Any, job: str) -> list[str]:
    """Ids of the core.subscribe commands following `job`: the gateway keeps each in its in-flight
    list until the subscription ends."""
    found = []
    for raw in r.lrange("g8os:gateway:inflight", 0, -1):
        body = json.loads(raw)
        if body.get("command") == "core.subscribe" and (body.get("arguments") or {}).get("id") == job:
            found.append(body["id"])
    return found


def test_logs_follow_subscribes_again_when_its_subscription_ends_first(
        node: Any, r: Any, spawned: list[subprocess.Popen[str]]) -> None:
    job = f"ls-{uuid.uuid4().hex[:8]}"
    push(r, "bash", {"script": runs_script(job, 2, 1.5)}, id=job, max_restart=2)
    wait_for(lambda: r.exists(f"result:{job}:flag"), what="the job accepted")
    follower = subprocess.Popen(command(node, "--json", "logs", "-f", job), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=clean_env())
    spawned.append(follower)
    first = wait_for(lambda: subscribers(r, job), what="the first subscription")[0]
    with node.client() as client:
        # Ends the subscription, not the job. The gateway holds the subscription before the
        # JobSupervisor does: until then, job.kill does not know it yet.
        wait_for(lambda: _ended(client, first), what="the first subscription ended")
    second = wait_for(lambda: [s for s in subscribers(r, job) if s != first], what="a new subscription")
    assert second
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    document = json.loads(out)
    texts = [m["text"] for m in document["messages"] if m["level"] == 1]
    assert texts == ["run 1", "done 1", "run 2", "done 2"]  # the replay after re-subscribing skipped
    assert document["result"]["state"] == "SUCCESS"
