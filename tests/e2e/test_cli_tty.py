"""The `g8os` CLI in a real terminal (a pty read through a terminal emulator) against a real node:
human tables, the spinner only on a terminal, `--json` parsed back, `--quiet`, the documented exit
codes, and every way of saying which node (flags, environment, the JSON `core0 sandbox up` prints).

`node` (tests/conftest.py) is the session's sandbox node.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from terminal import Terminal, clean_env

pytestmark = pytest.mark.timeout(90)

G8OS = [sys.executable, "-m", "g8os.client.cli"]
CORE0 = [sys.executable, "-m", "g8os.boot.cli"]
WAIT = 30
BOLD = "\x1b[1m"


def node_args(node: Any) -> list[str]:
    return ["--host", node.host, "--port", str(node.port), "--password", node.password or ""]


def in_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, Terminal]:
    """Run `g8os args...` in a pty until it exits: its exit status and the terminal."""
    term = Terminal([*G8OS, *args], env if env is not None else clean_env())
    try:
        code = term.wait_exit()
    finally:
        term.close()
    return code, term


def in_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `g8os args...` with stdout and stderr to pipes: no terminal anywhere."""
    return subprocess.run([*G8OS, *args], capture_output=True, text=True, env=clean_env(),
                          stdin=subprocess.DEVNULL, timeout=WAIT + 15)


def closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def job(node: Any) -> Iterator[Any]:
    client = node.client()
    response = client.bash("echo up; sleep 120")
    try:
        yield response
    finally:
        try:
            client.job.kill(response.id, signal.SIGKILL)
        except Exception:
            pass
        response.get(timeout=WAIT)
        client.close()


# --------------------------------------------------------------------------------------------- output


def test_tables_render_for_a_terminal(node: Any, job: Any) -> None:
    code, term = in_terminal(*node_args(node), "jobs")
    assert code == 0
    screen = term.text()
    assert re.search(r"^ID\s+COMMAND\s+STATE\s+PID\s+CPU%\s+RSS\s+UP$", screen, re.M)
    assert re.search(rf"^{job.id}\s+bash: echo up; sleep 120\s+running\s+\d+\s", screen, re.M)
    assert BOLD in term.raw  # rich styles the header for a terminal...
    piped = in_pipe(*node_args(node), "jobs")
    assert job.id in piped.stdout and "\x1b[" not in piped.stdout  # ...and not for a pipe

    code, term = in_terminal(*node_args(node), "info", "disk")
    assert code == 0
    assert re.search(r"^DEVICE\s+MOUNTPOINT\s+TYPE\s+SIZE\s+USED\s+FREE\s+USE%$", term.text(), re.M)
    assert re.search(r"^\S+\s+/\s+\S+\s+[\d.]+ [KMGT]iB\s+[\d.]+ [KMGT]iB\s+[\d.]+ [KMGT]iB\s+[\d.]+$",
                     term.text(), re.M)

    code, term = in_terminal(*node_args(node), "tree")
    assert code == 0
    assert re.search(r"^/\s+root\s+pid \d+\s+running", term.text(), re.M)
    assert re.search(r"^│   [├└]── redis\s+service\s+pid \d+\s+running", term.text(), re.M)

    code, term = in_terminal(*node_args(node), "info", "version")
    assert code == 0 and re.search(r"^version\s+\d+\.\d+", term.text(), re.M)


INFO_SCREENS = {
    "cpu": r"^CPU\s+MODEL\s+MHZ\s+CACHE\s+SOCKET\s+CORE\s+CORES\s+FLAGS$\n^\s*0\s+\S",
    "mem": r"^total\s+[\d.]+ [KMGT]iB$(.|\n)*^used %\s+[\d.]+$",
    "disk": r"^DEVICE\s+MOUNTPOINT\s+TYPE\s+SIZE\s+USED\s+FREE\s+USE%$",
    "nic": r"^NAME\s+STATE\s+MAC\s+MTU\s+SPEED\s+FLAGS\s+ADDRESSES$\n^lo\s+\S+\s+65536\s+up,loopback",
    "os": r"^hostname\s+\S+$(.|\n)*^kernel\s+\S+ \S+$(.|\n)*^uptime\s+\d+",
    "port": r"^PROTO\s+ADDRESS\s+PORT\s+PATH\s+PID$\n^tcp\s+0\.0\.0\.0\s+6379\s+\d+$",
    "version": r"^version\s+\d+\.\d+\.\d+$\n^branch\s+\S+",
}


@pytest.mark.parametrize("name", sorted(INFO_SCREENS))
def test_info(node: Any, name: str) -> None:
    code, term = in_terminal(*node_args(node), "info", name)
    assert code == 0 and re.search(INFO_SCREENS[name], term.text(), re.M), term.text()
    piped = in_pipe(*node_args(node), "info", name, "--json")
    client = node.client()
    try:  # --json is the node's answer as the client returns it (same keys, same shape)
        expected = getattr(client.info, name)()
    finally:
        client.close()
    document = json.loads(piped.stdout)
    assert type(document) is type(expected)
    first, want = (document[0], expected[0]) if isinstance(expected, list) else (document, expected)
    assert set(first) == set(want)


def test_spinner_only_on_a_terminal(node: Any) -> None:
    # The spinner is transient (erased when the answer comes), so look at what was written.
    code, term = in_terminal(*node_args(node), "system", "sleep", "1")
    assert code == 0 and "running sleep 1" in term.plain()
    assert "running sleep 1" not in term.text()  # gone from the screen once done

    for quiet in (["-q"], ["--json"]):
        code, term = in_terminal(*node_args(node), *quiet, "system", "sleep", "1")
        assert code == 0 and "running sleep" not in term.plain(), quiet

    piped = in_pipe(*node_args(node), "system", "sh", "-c", "sleep 1; echo done")
    assert piped.returncode == 0 and piped.stdout == "done\n" and piped.stderr == ""


def test_json_parsed_back(node: Any, job: Any) -> None:
    code, term = in_terminal(*node_args(node), "--json", "jobs")
    assert code == 0
    document = json.loads(term.plain())
    assert job.id in json.dumps(document)
    assert "\n  " in term.plain()  # indented for a person at a terminal

    code, term = in_terminal(*node_args(node), "info", "mem", "--json")  # after the command too
    assert code == 0 and json.loads(term.plain())["total"] > 0

    code, term = in_terminal(*node_args(node), "--json", "tree", "/no/such")
    assert code == 4
    # The error document on stdout, the message on stderr: a terminal shows both, in order.
    text = term.plain()
    document = json.loads(text[:text.rindex("}") + 1])
    assert document["error"]["exit"] == 4 and document["error"]["code"] == 404


def test_quiet(node: Any, job: Any) -> None:
    code, term = in_terminal(*node_args(node), "-q", "ping")
    assert code == 0 and term.text().strip().splitlines() == [term.text().strip()]
    assert term.text().startswith("PONG ") and " from " not in term.text()

    # SIGCONT leaves the job running, for the quiet kill after it.
    code, term = in_terminal(*node_args(node), "kill", "--signal", "CONT", job.id)
    assert code == 0 and f"sent SIGCONT to job {job.id}" in term.text()  # not quiet: says what it did
    code, term = in_terminal(*node_args(node), "kill", job.id, "--quiet")
    assert code == 0 and term.text().strip() == ""
    assert job.get(timeout=WAIT).state == "KILLED"


# --------------------------------------------------------------------------------------------- exit codes


def test_exit_codes(node: Any) -> None:
    port = str(closed_port())
    cases: list[tuple[list[str], int, str]] = [
        ([*node_args(node), "ping"], 0, "PONG"),
        ([*node_args(node), "system", "sh", "-c", "echo oops >&2; exit 1"], 1, "oops"),
        ([*node_args(node), "shell", "-c", "kill /"], 1, "error: the root is not killed"),
        ([*node_args(node), "kill"], 2, "Missing argument"),
        ([*node_args(node), "tree", "relative"], 2, "must be an actor path"),
        ([*node_args(node), "--timeout", "-1", "ping"], 2, "Invalid value for '--timeout'"),
        (["--port", port, "ping"], 3, "cannot reach the node"),
        ([*node_args(node), "tree", "/no/such"], 4, "error: no actor at /no/such"),
        ([*node_args(node), "jobs", str(uuid.uuid4())], 4, "error:"),
        ([*node_args(node), "system", "--max-time", "1", "sleep", "30"], 5, "ran out of time"),
    ]
    for args, expected, said in cases:
        code, term = in_terminal(*args)
        assert (code, said in term.text()) == (expected, True), (args, term.text())


# --------------------------------------------------------------------------------------------- connection


def test_connection_from_flags_environment_and_connect(node: Any, tmp_path: Path) -> None:
    line = json.dumps({"name": node.name, "host": node.host, "port": node.port,
                       "password": node.password, "socket": node.socket})
    env = clean_env(G8OS_HOST=node.host, G8OS_PORT=str(node.port), G8OS_PASSWORD=node.password or "")
    assert in_terminal("ping", env=env)[0] == 0
    assert in_terminal("--connect", line, "ping")[0] == 0
    saved = tmp_path / "node.json"
    saved.write_text(line + "\n")
    assert in_terminal("ping", env=clean_env(G8OS_CONNECT=str(saved)))[0] == 0
    assert in_terminal("--sandbox", node.name, "ping")[0] == 0
    # A flag beats the environment: the closed port in G8OS_PORT loses to --port.
    stale = clean_env(G8OS_PORT=str(closed_port()), G8OS_SANDBOX="no-such-sandbox")
    assert in_terminal(*node_args(node), "ping", env=stale)[0] == 0
    assert in_terminal("--port", str(closed_port()), "ping", env=env)[0] == 3
    assert in_terminal("--sandbox", f"absent-{uuid.uuid4().hex[:6]}", "ping")[0] == 4


def test_connect_with_what_core0_sandbox_up_prints(tmp_path: Path) -> None:
    name = f"tty-{uuid.uuid4().hex[:6]}"
    up = subprocess.run([*CORE0, "sandbox", "up", "--detach", "--name", name], capture_output=True,
                        text=True, env=clean_env(), timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        code, term = in_terminal("--connect", up.stdout.strip(), "ping")
        assert code == 0 and "PONG" in term.text()
        # `core0 sandbox up --detach > node.json 2>&1`: the JSON line among the hints.
        saved = tmp_path / "node.json"
        saved.write_text(up.stdout + up.stderr)
        code, term = in_terminal("--connect", str(saved), "--json", "ping")
        assert code == 0 and json.loads(term.plain())["node"] in (f"{info['host']}:{info['port']}",
                                                                  f"unix:{info['socket']}")
    finally:
        subprocess.run([*CORE0, "sandbox", "down", "--name", name], capture_output=True, env=clean_env(),
                       timeout=90)
