"""The `g8os` command line against a real node, as a user runs it: a subprocess, and a real terminal
(pexpect) where the output depends on one.

`node` (from tests/conftest.py) has `host, port, password, socket, name` and `node.client()`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from typing import Any

import pexpect
import pytest

pytestmark = pytest.mark.timeout(60)

G8OS = [sys.executable, "-m", "g8os.client.cli"]
WAIT = 30


CONNECTION_VARS = {"G8OS_HOST", "G8OS_PORT", "G8OS_PASSWORD", "G8OS_SOCKET", "G8OS_SANDBOX", "G8OS_CONNECT",
                   "G8OS_TIMEOUT"}


def clean_env() -> dict[str, str]:
    """This environment without the settings that would pick another node (G8OS_SANDBOX_ROOT stays)."""
    return {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}


def node_args(node: Any) -> list[str]:
    return ["--host", node.host, "--port", str(node.port), "--password", node.password or ""]


def g8os(node: Any | None, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [*G8OS, *(node_args(node) if node is not None else []), *args]
    return subprocess.run(command, capture_output=True, text=True, env=clean_env(), input=input,
                          timeout=WAIT + 15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------------------------- basics


def test_help_lists_commands_and_exit_codes() -> None:
    result = g8os(None, "--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout and "node unreachable" in result.stdout
    for command in ("ping", "system", "jobs", "kill", "tree", "logs"):
        assert command in result.stdout


def test_usage_error_exits_2() -> None:
    assert g8os(None, "kill").returncode == 2
    assert g8os(None, "frobnicate").returncode == 2


def test_ping(node: Any) -> None:
    human = g8os(node, "ping")
    assert human.returncode == 0 and "PONG" in human.stdout
    document = json.loads(g8os(node, "--json", "ping").stdout)
    assert document["reply"].startswith("PONG")


def test_connection_choices(node: Any) -> None:
    line = json.dumps({"host": node.host, "port": node.port, "password": node.password,
                       "socket": node.socket})
    assert g8os(None, "--connect", line, "ping").returncode == 0
    assert g8os(None, "--sandbox", node.name, "ping").returncode == 0
    env = clean_env() | {"G8OS_HOST": node.host, "G8OS_PORT": str(node.port),
                         "G8OS_PASSWORD": node.password or ""}
    assert subprocess.run([*G8OS, "ping"], env=env, capture_output=True, timeout=WAIT).returncode == 0


def test_unreachable_exits_3() -> None:
    result = g8os(None, "--port", str(free_port()), "--json", "ping")
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["exit"] == 3


def test_wrong_password_exits_3(node: Any) -> None:
    if not node.password:
        pytest.skip("this node has no password")
    result = g8os(None, "--host", node.host, "--port", str(node.port), "--password", "wrong", "ping")
    assert result.returncode == 3


# --------------------------------------------------------------------------------------------- system


def test_system_prints_output_and_exits_with_status(node: Any) -> None:
    ok = g8os(node, "system", "echo", "hello world")
    assert ok.returncode == 0 and ok.stdout == "hello world\n"
    failed = g8os(node, "system", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert failed.returncode == 7
    assert "out" in failed.stdout and "err" in failed.stderr
    split = g8os(node, "system", "sh -c 'exit 3'")  # one argument: split like a shell would
    assert split.returncode == 3


def test_system_json(node: Any) -> None:
    result = g8os(node, "--json", "system", "sh", "-c", 'echo \'20::{"a":1}\'; exit 2')
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["exit_status"] == 2 and document["code"] == 1002 and document["value"] == {"a": 1}


def test_system_not_found_exits_4(node: Any) -> None:
    result = g8os(node, "system", f"no-such-binary-{uuid.uuid4().hex[:6]}")
    assert result.returncode == 4 and "error" in result.stderr


def test_system_max_time_exits_5(node: Any) -> None:
    assert g8os(node, "system", "--max-time", "1", "sleep", "30").returncode == 5


def test_system_stream(node: Any) -> None:
    result = g8os(node, "system", "--stream", "sh", "-c", "for i in 1 2 3; do echo n$i; done; exit 1")
    assert result.returncode == 1
    assert result.stdout.split() == ["n1", "n2", "n3"]
    document = json.loads(g8os(node, "--json", "system", "--stream", "echo", "x").stdout)
    assert any(m["text"] == "x" for m in document["messages"])


def test_system_stdin_and_env(node: Any) -> None:
    result = g8os(node, "system", "--stdin", "-", "-e", "FOO=bar", "sh", "-c", 'echo "$FOO"; cat',
                  input="fed\n")
    assert result.returncode == 0 and result.stdout.split() == ["bar", "fed"]


# --------------------------------------------------------------------------------------------- jobs


def test_jobs_kill_and_logs(node: Any) -> None:
    client = node.client()
    job = client.system(["sh", "-c", "echo started; sleep 30"])
    listed = g8os(node, "jobs")
    assert listed.returncode == 0 and job.id in listed.stdout
    assert job.id in json.dumps(json.loads(g8os(node, "--json", "jobs").stdout))
    assert job.id in json.dumps(json.loads(g8os(node, "--json", "jobs", job.id).stdout))
    assert g8os(node, "jobs", str(uuid.uuid4())).returncode == 4

    killed = g8os(node, "-q", "kill", job.id, "--signal", "KILL")
    assert killed.returncode == 0 and killed.stdout == ""
    result = job.get(timeout=WAIT)
    assert result.state != "SUCCESS"
    logs = g8os(node, "logs", job.id)  # ended: its kept output
    assert logs.returncode == 0 and "started" in logs.stdout
    assert g8os(node, "kill", str(uuid.uuid4())).returncode == 4
    assert g8os(node, "logs", str(uuid.uuid4())).returncode == 4


def test_logs_follow(node: Any) -> None:
    job = node.client().system(["sh", "-c", "for i in 1 2 3 4 5; do echo tick$i; sleep 0.3; done"])
    result = g8os(node, "logs", "-f", job.id)
    assert result.returncode == 0 and "tick5" in result.stdout
    job.get(timeout=WAIT)  # the follow ends with the job's last message; its result may trail by a moment
    document = json.loads(g8os(node, "--json", "logs", job.id).stdout)  # ended by now
    assert document["running"] is False and "tick5" in document["result"]["stdout"]


def test_tree(node: Any) -> None:
    human = g8os(node, "tree")
    assert human.returncode == 0 and "jobs" in human.stdout
    document = json.loads(g8os(node, "--json", "tree", "/jobs").stdout)
    assert "/jobs" in json.dumps(document)
    assert g8os(node, "tree", "/no/such/actor").returncode == 4
    assert g8os(node, "tree", "relative").returncode == 2


# --------------------------------------------------------------------------------------------- terminal


def spawn(node: Any, *args: str) -> pexpect.spawn:
    return pexpect.spawn(G8OS[0], [*G8OS[1:], *node_args(node), *args], env=clean_env(),
                         encoding="utf-8", timeout=WAIT, dimensions=(40, 160))


def test_terminal_output(node: Any) -> None:
    child = spawn(node, "ping")
    child.expect("PONG")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    child = spawn(node, "system", "--stream", "sh", "-c", "echo one; sleep 0.5; echo two")
    child.expect("one")
    child.expect("two")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_terminal_json_is_pure_json(node: Any) -> None:
    # On a terminal a spinner may run while waiting, but never with --json: stdout stays one document.
    child = spawn(node, "--json", "system", "sh", "-c", "sleep 0.5; echo done")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert json.loads(child.before.replace("\r\n", "\n"))["stdout"].strip() == "done"
