"""The Python client against a real node (a sandbox started by the `node` fixture of tests/conftest.py).

`node` has `host, port, password, socket, name` and `node.client()` returns a connected Client.
Assertions on the shape of answers stay loose where the protocol leaves the shape open (job.list,
actor.tree): what matters here is that the client reaches the node and maps results correctly.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from g8os.client import (
    Client,
    InvalidArgument,
    JobNotFound,
    JobTimeoutError,
    NotFound,
    ProcessError,
    ResultError,
    Return,
    UnknownCommandError,
)
from g8os.messages.command import Flag, State

pytestmark = pytest.mark.timeout(60)

WAIT = 30  # seconds: generous, a loaded CI machine is slow; no test waits this long when it passes


@pytest.fixture
def client(node: Any) -> Client:
    return node.client()


def finished(response: Any) -> Return:
    return response.get(timeout=WAIT)


# --------------------------------------------------------------------------------------------- basics


def test_ping(client: Client) -> None:
    reply = client.ping()
    assert isinstance(reply, str) and reply.startswith("PONG ")


def test_from_sandbox(node: Any) -> None:
    with Client.from_sandbox(node.name) as sandbox:
        assert sandbox.ping().startswith("PONG")


def test_system_success(client: Client) -> None:
    result = finished(client.system("echo hello"))
    assert result.state == State.SUCCESS and result.code == 0 and result.exit_status == 0
    assert result.stdout.strip() == "hello" and result.stderr == ""
    assert result.command == "core.system" and result.container == 0
    assert result.starttime > 1e9 and result.time >= 0


def test_system_failure_keeps_stdout_stderr_and_status(client: Client) -> None:
    response = client.system(["sh", "-c", "echo out; echo err >&2; exit 3"])
    result = finished(response)
    assert result.state == State.ERROR and result.code == 1003 and result.exit_status == 3
    assert "out" in result.stdout and "err" in result.stderr
    with pytest.raises(ProcessError) as caught:
        response.sync(timeout=WAIT)
    assert caught.value.exit_status == 3 and caught.value.result.id == response.id


def test_system_dir_env_and_stdin(client: Client) -> None:
    result = finished(client.system(["sh", "-c", 'pwd; echo "$FOO"; cat'], dir="/tmp",
                                    env={"FOO": "bar"}, stdin="piped\n"))
    assert result.stdout.split() == ["/tmp", "bar", "piped"]


def test_system_level_20_result(client: Client) -> None:
    result = finished(client.system(["sh", "-c", 'echo before; echo \'20::{"a":1}\'']))
    assert result.level == 20 and result.json() == {"a": 1}
    assert "before" in result.stdout


def test_bash(client: Client) -> None:
    result = finished(client.bash("for i in 1 2 3; do echo n$i; done | tail -n 1; echo err >&2"))
    assert result.success and result.stdout.strip() == "n3" and "err" in result.stderr
    assert finished(client.bash("cat", stdin="fed")).stdout == "fed"
    assert finished(client.bash("exit 4")).exit_status == 4


def test_executable_not_found(client: Client) -> None:
    response = client.system(f"no-such-binary-{uuid.uuid4().hex[:6]}")
    with pytest.raises(NotFound) as caught:
        response.sync(timeout=WAIT)
    assert caught.value.code == 404


def test_max_time_kills(client: Client) -> None:
    response = client.system("sleep 30", max_time=1)
    with pytest.raises(JobTimeoutError) as caught:
        response.sync(timeout=WAIT)
    assert caught.value.result.state == State.TIMEOUT


# --------------------------------------------------------------------------------------------- responses


def test_get_is_repeatable(client: Client, node: Any) -> None:
    response = client.system("echo again")
    first, second = finished(response), finished(response)
    assert first.payload == second.payload
    # Another client, knowing only the id, reads the same result.
    assert node.client().response_for(response.id).get(timeout=WAIT).payload == first.payload


def test_exists_and_running(client: Client) -> None:
    response = client.system("sleep 30")
    assert response.exists and response.running
    client.job.kill(response.id)
    result = finished(response)
    assert result.state != State.SUCCESS
    assert response.exists and not response.running


def test_unknown_job(client: Client) -> None:
    response = client.response_for(str(uuid.uuid4()))
    assert not response.exists and not response.running
    with pytest.raises(JobNotFound):
        response.get(timeout=WAIT)


def test_async_get(client: Client) -> None:
    async def run() -> Return:
        return await client.system("echo async").aget(timeout=WAIT)

    assert asyncio.run(run()).stdout.strip() == "async"


def test_stream_callback_receives_lines_and_end_flag(client: Client) -> None:
    response = client.system(["sh", "-c", "for i in 1 2 3; do echo line$i; done; echo warn >&2"],
                             stream=True)
    seen: list[tuple[int, str, int]] = []
    response.stream(lambda level, text, flags: seen.append((level, text, flags)), timeout=WAIT)
    lines = [(level, text) for level, text, _ in seen if text]
    assert [text for level, text in lines if level == 1] == ["line1", "line2", "line3"]
    assert (2, "warn") in lines
    assert seen[-1][2] & Flag.EXIT_SUCCESS
    assert finished(response).success


def test_stream_end_flag_on_failure(client: Client) -> None:
    response = client.system(["sh", "-c", "echo bye; exit 1"], stream=True)
    messages = list(response.messages(timeout=WAIT))
    assert messages[-1].end and messages[-1].flags & Flag.EXIT_ERROR
    assert any(m.text == "bye" for m in messages)


def test_subscribe_follows_another_job(client: Client) -> None:
    watched = client.system(["sh", "-c", "for i in 1 2 3 4 5; do echo tick$i; sleep 0.2; done"])
    # at once: the subscription waits for a job accepted but still on its way to the JobSupervisor
    texts = [m.text for m in client.subscribe(watched.id).messages(timeout=WAIT)]
    assert "tick5" in texts
    assert finished(watched).success


# --------------------------------------------------------------------------------------------- errors


def test_unknown_command(client: Client) -> None:
    result = client.raw("no.such.command", {}).get(timeout=WAIT)
    assert result.state == State.UNKNOWN_CMD
    with pytest.raises(UnknownCommandError):
        client.json("no.such.command", {})


def test_bad_argument_is_refused_by_the_node(client: Client) -> None:
    # raw() sends arguments unchecked: the node's validation answers.
    result = client.raw("core.system", {"name": 5}).get(timeout=WAIT)
    assert result.state == State.ERROR and result.code == 400 and result.level == 20
    with pytest.raises(InvalidArgument) as caught:
        result.raise_for_state()
    assert isinstance(caught.value, ResultError) and "name" in caught.value.field


def test_bad_argument_is_refused_before_sending(client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.job.kill("")
    assert not isinstance(caught.value, ResultError)  # the client refused it, the node never saw it
    with pytest.raises(InvalidArgument):
        client.actor.tree("relative")


# --------------------------------------------------------------------------------------------- namespaces


def test_info(client: Client) -> None:
    assert isinstance(client.info.cpu(), list) and client.info.cpu()
    assert client.info.mem()["total"] > 0
    assert isinstance(client.info.disk(), list)
    assert isinstance(client.info.nic(), list) and client.info.nic()
    assert client.info.os()["hostname"]
    assert isinstance(client.info.port(), list)
    assert isinstance(client.info.version(), dict)


def test_job_list_and_kill(client: Client) -> None:
    response = client.system("sleep 30")
    assert response.id in json.dumps(client.job.list())
    assert response.id in json.dumps(client.job.list(response.id))
    client.job.kill(response.id, 9)
    result = finished(response)
    assert result.state in (State.KILLED, State.ERROR) and result.exit_status is None
    with pytest.raises(NotFound):
        client.job.list(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        client.job.kill(str(uuid.uuid4()))


def test_process_list_and_kill(client: Client) -> None:
    processes = client.process.list()
    assert processes
    assert client.process.list(pid=1)
    with pytest.raises(NotFound):
        client.process.kill(4_000_000)  # above any pid_max: cannot exist


def test_actor_tree_and_inspect(client: Client) -> None:
    tree = client.actor.tree()
    text = json.dumps(tree)
    assert '"/"' in text and "/jobs" in text
    assert "/jobs" in json.dumps(client.actor.tree("/jobs"))
    assert client.actor.inspect("/jobs")
    with pytest.raises(NotFound):
        client.actor.tree("/no/such/actor")
