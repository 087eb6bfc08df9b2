"""`g8os shell` against a real node: in a real pty read through a terminal emulator (prompt,
completion, history, Ctrl-C, Ctrl-D), and one-shot (`-c`, stdin) for output and exit codes.

`node` (tests/conftest.py) is the session's sandbox node. Each test gives the shell a HOME and
XDG_STATE_HOME of its own (pytest's tmp_path), so history never touches the real one.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from terminal import Terminal, clean_env
from wire import wait_for

pytestmark = pytest.mark.timeout(90)

G8OS = [sys.executable, "-m", "g8os.client.cli"]
WAIT = 30
PROMPT = re.compile(r"^g8os:(/\S*)> ?")


def node_args(node: Any) -> list[str]:
    return ["--host", node.host, "--port", str(node.port), "--password", node.password or ""]


def home_env(home: Path) -> dict[str, str]:
    return clean_env(HOME=str(home), XDG_STATE_HOME=str(home / "state"))


def one_shot(node: Any | None, home: Path, *args: str, input: str | None = None,
             before: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`g8os [before...] shell args...` with stdin and stdout pipes (not a terminal)."""
    command = [*G8OS, *(node_args(node) if node is not None else []), *before, "shell", *args]
    return subprocess.run(command, capture_output=True, text=True, env=home_env(home), input=input,
                          timeout=WAIT + 15)


# --------------------------------------------------------------------------------------------- the pty


class Shell:
    """An interactive `g8os shell` in a pty, driven line by line."""

    def __init__(self, node: Any, home: Path, *args: str) -> None:
        self.term = Terminal([*G8OS, *node_args(node), "shell", *args], home_env(home))
        self.wait_prompt("/")

    def prompts(self) -> int:
        return sum(1 for line in self.term.lines() if PROMPT.match(line))

    def at_prompt(self, cwd: str | None = None) -> bool:
        match = PROMPT.match(self.term.cursor_line)
        return bool(match) and self.term.cursor_line.endswith(">") and (cwd is None or match.group(1) == cwd)

    def wait_prompt(self, cwd: str | None = None) -> None:
        self.term.wait(lambda _: self.at_prompt(cwd), f"the prompt in {cwd or 'any actor'}")

    def prompt_lines(self) -> list[int]:
        return [i for i, text in enumerate(self.term.lines()) if PROMPT.match(text)]

    def run(self, line: str, cwd: str | None = None) -> str:
        """Type `line` and Enter; wait for the next prompt (in `cwd` if given); return what the
        command printed, as the screen shows it. An empty `line` runs what is already typed."""
        count = self.prompts()

        def done(_: Terminal) -> bool:
            prompts = self.prompt_lines()
            return (len(prompts) > count and self.at_prompt(cwd)
                    and self.term.lines()[prompts[-2]].endswith(line))

        self.term.type(line + "\r")
        self.term.wait(done, f"the prompt after {line!r}")
        lines = self.term.lines()
        # Between the line the command was typed on and the new prompt.
        start, end = self.prompt_lines()[-2:]
        return "\n".join(lines[start + 1:end])

    def interrupt(self, cwd: str | None = None) -> None:
        """Ctrl-C, and wait for a new prompt."""
        count = self.prompts()
        self.term.type("\x03")
        self.term.wait(lambda _: self.prompts() > count and self.at_prompt(cwd), "a prompt after Ctrl-C")

    def close(self) -> None:
        self.term.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def shell(node: Any, home: Path) -> Iterator[Shell]:
    opened = Shell(node, home)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def job(node: Any) -> Iterator[Any]:
    """A job that runs until the test ends, re-run up to 3 times after a failure."""
    client = node.client()
    response = client.bash("echo up; sleep 120", max_restart=3)
    wait_for(lambda: any(c["name"] == response.id for c in client.actor.tree("/jobs")["children"]),
             what="the job in the tree")
    try:
        yield response
    finally:
        # job.kill marks it KILLED: it is not re-run, whatever runs it has left.
        try:
            client.job.kill(response.id, signal.SIGKILL)
        except Exception:
            pass
        response.get(timeout=WAIT)
        client.close()


# --------------------------------------------------------------------------------------------- interactive


def test_walk_the_tree(shell: Shell) -> None:
    listing = shell.run("ls")
    assert re.search(r"NAME\s+KIND\s+PID\s+STATE\s+RESTARTS\s+UP", listing)
    assert {"gateway", "jobs", "log", "services/", "stats"} <= {line.split()[0] for line in
                                                                listing.splitlines()[1:]}
    shell.run("cd services", cwd="/services")
    assert re.search(r"redis\s+service\s+\d+\s+running", shell.run("ls", cwd="/services"))
    shell.run("cd redis", cwd="/services/redis")
    assert shell.run("pwd", cwd="/services/redis") == "/services/redis"
    shell.run("cd ../..", cwd="/")
    shell.run("cd /jobs", cwd="/jobs")
    shell.run("cd -", cwd="/")  # back to the previous one

    tree = shell.run("tree /services")
    assert re.search(r"services\s+service_supervisor\s+pid \d+\s+running", tree)
    assert re.search(r"[├└]── redis\s+service\s+pid \d+\s+running", tree)

    inspected = shell.run("inspect /gateway")
    assert re.search(r"path\s+/gateway", inspected) and re.search(r"tier\s+heavy", inspected)
    assert re.search(r"spec\s+restart=permanent shutdown=", inspected)
    assert re.search(r"consecutive failures\s+\d+", inspected)
    shell.run("cd /services/redis", cwd="/services/redis")
    assert re.search(r"argv\s+\S*redis-server", shell.run("inspect", cwd="/services/redis"))


def test_completion_of_paths_and_commands(shell: Shell, job: Any) -> None:
    term = shell.term
    term.type("cd /ga\t")  # one match: completed in place
    term.wait(lambda t: t.cursor_line == "g8os:/> cd /gateway", "cd /ga completed to /gateway")
    shell.run("", cwd="/gateway")  # Enter runs it

    term.type("ins\t")  # a command name
    term.wait(lambda t: t.cursor_line == "g8os:/gateway> inspect", "ins completed to inspect")
    term.type(" ../ser\t")  # a relative path, from the live tree
    term.wait(lambda t: t.cursor_line == "g8os:/gateway> inspect ../services", "../ser completed")
    term.type("/r\t")  # what is under it
    term.wait(lambda t: t.cursor_line == "g8os:/gateway> inspect ../services/redis", "redis completed")
    assert re.search(r"path\s+/services/redis", shell.run(""))

    # A job started a moment ago completes too: the tree snapshot is at most a few seconds old.
    shell.run("cd /jobs", cwd="/jobs")
    term.type(f"inspect {job.id[:8]}\t")
    term.wait(lambda t: t.cursor_line == f"g8os:/jobs> inspect {job.id}", "the job id completed")
    assert re.search(rf"path\s+/jobs/{job.id}", shell.run("", cwd="/jobs"))

    term.type("kill --sig\t")  # an option, then a signal name
    term.wait(lambda t: t.cursor_line == "g8os:/jobs> kill --signal", "--sig completed")
    term.type(" HU\t")
    term.wait(lambda t: t.cursor_line == "g8os:/jobs> kill --signal HUP", "HU completed to HUP")
    shell.interrupt("/jobs")  # Ctrl-C drops the line, the shell stays

    term.type("logs red\t")  # after `logs`: job ids and startup services' ids
    term.wait(lambda t: t.cursor_line == "g8os:/jobs> logs redis", "a service's id completed")
    shell.interrupt("/jobs")


def test_history_recall_and_persistence(node: Any, home: Path) -> None:
    first = Shell(node, home)
    try:
        first.run("cd /log", cwd="/log")
        first.run("pwd", cwd="/log")
        first.run("cd /", cwd="/")
        first.term.type("\x1b[A\x1b[A\x1b[A")  # up arrow: `cd /`, `pwd`, then `cd /log`
        first.term.wait(lambda t: t.cursor_line == "g8os:/> cd /log", "cd /log recalled")
        first.run("", cwd="/log")
        first.term.type("\x04")  # Ctrl-D leaves
        assert first.term.wait_exit() == 0
    finally:
        first.close()
    history = home / "state" / "g8os" / "shell_history"
    assert "+cd /log" in history.read_text()

    second = Shell(node, home)  # a new session recalls the last one's lines
    try:
        second.term.type("\x1b[A")
        second.term.wait(lambda t: t.cursor_line == "g8os:/> cd /log", "history from the last session")
        second.run("", cwd="/log")
    finally:
        second.close()


def test_help_and_errors_keep_the_shell(shell: Shell) -> None:
    listing = shell.run("help")
    for name in ("cd", "events", "exit", "help", "inspect", "kill", "logs", "ls", "restart", "system",
                 "tree"):
        assert re.search(rf"^{name}\s+\S", listing, re.M), name
    assert "Usage: kill [OPTIONS] PATH" in shell.run("help kill")
    assert "Usage: ls [OPTIONS] [PATH]" in shell.run("ls --help")

    assert "error: unknown command 'frobnicate'" in shell.run("frobnicate")
    assert "error: no actor at /no/such" in shell.run("ls /no/such")
    assert "error: kill: Missing argument 'PATH'" in shell.run("kill")
    assert "unknown signal 'NOPE'" in shell.run("kill --signal NOPE /stats")
    assert "error: unterminated ' quote" in shell.run("cd 'jobs")
    assert "must be an actor path" in shell.run("inspect /bad*path")
    assert "error: the root is not killed through itself" in shell.run("kill /")  # the node's 412
    shell.interrupt("/")  # Ctrl-C at an empty prompt
    assert shell.run("pwd") == "/"  # still alive, still at /


def test_kill_and_restart_seen_in_the_tree(shell: Shell, node: Any, job: Any) -> None:
    client = node.client()
    path = f"/jobs/{job.id}"
    shell.run("cd /jobs", cwd="/jobs")
    assert re.search(rf"{job.id}\s+process\s+\d+\s+running\s+0\b", shell.run("ls", cwd="/jobs"))

    assert re.search(rf"sent SIGKILL to {path} \(pid \d+\)", shell.run(f"kill {job.id}", cwd="/jobs"))
    wait_for(lambda: client.actor.inspect(path)["restarts"] == 1 and
             client.actor.inspect(path)["state"] == "running", timeout=WAIT, what="the job's re-run")
    tree = shell.run(f"tree {job.id}", cwd="/jobs")
    assert re.search(r"process\s+pid \d+\s+running\s+restarts 1", tree)
    assert "killed by SIGKILL" in tree

    assert f"restarting {path}" in shell.run(f"restart {path}", cwd="/jobs")
    wait_for(lambda: client.actor.inspect(path)["restarts"] == 2 and
             client.actor.inspect(path)["state"] == "running", timeout=WAIT, what="the job's third run")
    assert re.search(r"running\s+restarts 2", shell.run(f"tree {job.id}", cwd="/jobs"))

    # A heavy actor: its supervisor (the root) starts it again in a new process.
    before = client.actor.inspect("/stats")
    assert f"sent SIGTERM to /stats (pid {before['pid']})" in shell.run("kill -s TERM /stats", cwd="/jobs")
    wait_for(lambda: (lambda s: s["state"] == "running" and s["restarts"] == before["restarts"] + 1)(
        client.actor.inspect("/stats")), timeout=WAIT, what="/stats restarted")
    after = client.actor.inspect("/stats")
    line = next(line for line in shell.run("ls /", cwd="/jobs").splitlines() if line.startswith("stats"))
    assert line.split()[:5] == ["stats", "stats", str(after["pid"]), "running", str(after["restarts"])]
    client.close()


def test_ctrl_c_stops_a_running_command(shell: Shell, node: Any) -> None:
    marker = uuid.uuid4().hex[:8]
    shell.term.type(f"system sh -c 'echo {marker}; exec sleep 60'\r")
    shell.term.wait_text(marker)
    client = node.client()
    job_id = wait_for(lambda: next((j["cmd"]["id"] for j in client.job.list()
                                    if marker in json.dumps(j)), None), what="the job")
    shell.term.type("\x03")
    shell.term.wait_text(f"interrupted: sent SIGTERM to job {job_id}")
    shell.wait_prompt("/")
    assert client.response_for(job_id).get(timeout=WAIT).state != "SUCCESS"  # it was stopped
    assert shell.run("pwd") == "/"
    client.close()


def test_logs_and_events_followed_and_stopped(shell: Shell, node: Any) -> None:
    client = node.client()
    job = client.bash("for i in 1 2 3; do echo tick$i; sleep 0.2; done; exec sleep 120", max_restart=2)
    path = f"/jobs/{job.id}"
    try:
        wait_for(lambda: client.actor.inspect(path)["state"] == "running", what="the job running")
        shell.run(f"cd {path}", cwd=path)
        shell.term.type("logs -f\r")  # the current actor's output, followed
        shell.term.wait(lambda t: "tick3" in t.text(), "tick3 followed")
        shell.term.type("\x03")  # Ctrl-C stops following, not the shell
        shell.term.wait_text("interrupted")
        shell.wait_prompt(path)
        assert "tick1" in shell.run("logs", cwd=path)

        shell.run("cd ..", cwd="/jobs")
        shell.term.type(f"events -f -n 1 {job.id}\r")  # a relative path: events about this job
        client.actor.kill(path)  # a crash, seen as it happens
        shell.term.wait(lambda t: re.search(rf"/job/restarting\s+{path}\s", t.text()),
                        "the crash event followed")
        shell.term.wait(lambda t: re.search(rf"/job/start\s+{path}\s+.*run=2", t.text()), "the re-run")
        shell.interrupt("/jobs")  # the prompt back, on a line of its own
    finally:
        try:
            client.job.kill(job.id, signal.SIGKILL)
        except Exception:
            pass
        job.get(timeout=WAIT)
        client.close()


def test_ctrl_d_exits_with_the_last_status(node: Any, home: Path) -> None:
    opened = Shell(node, home)
    try:
        opened.run("ls /no/such")
        opened.term.type("\x04")
        assert opened.term.wait_exit() == 4
    finally:
        opened.close()
    opened = Shell(node, home)
    try:
        opened.term.type("exit 9\r")
        assert opened.term.wait_exit() == 9
    finally:
        opened.close()


# --------------------------------------------------------------------------------------------- one-shot


def test_one_shot_output_and_exit_codes(node: Any, home: Path) -> None:
    result = one_shot(node, home, "-c", "tree /services")
    assert result.returncode == 0 and re.search(r"[├└]── redis\s+service", result.stdout)
    assert one_shot(node, home, "-c", "cd /jobs; pwd").stdout == "/jobs\n"
    assert one_shot(node, home, "-c", "cd /services\nls").stdout.count("redis") == 1
    # a startup service's output, as a job's: by its path, or from inside it
    for script in ("logs /services/redis", "cd /services/redis; logs"):
        shown = one_shot(node, home, "-c", script)
        assert shown.returncode == 0 and "Ready to accept connections" in shown.stdout, (script, shown)
    refused = one_shot(node, home, "-c", "logs /services")
    assert refused.returncode == 2 and "not a job or a service" in refused.stderr + refused.stdout

    codes = {
        "pwd": 0,
        "ls /no/such": 4,                 # not found
        "ls /no/such; pwd": 0,            # the last command's status
        "frobnicate": 2,                  # unknown command
        "kill": 2,                        # missing argument
        "inspect /bad*path": 2,           # refused by the node (400)
        "kill /": 1,                      # the command failed (412: the root is not killed)
        "system sh -c 'exit 3'": 3,       # a process: its own status
        "system --max-time 1 sleep 30": 5,
        "exit 7": 7,
        "exit; pwd": 0,                   # exit ends the script: pwd never runs...
        "cd 'unterminated": 2,
    }
    for script, code in codes.items():
        run = one_shot(node, home, "-c", script)
        assert run.returncode == code, (script, run.stdout, run.stderr)
    assert one_shot(node, home, "-c", "exit; pwd").stdout == ""  # ...as said


def test_one_shot_json(node: Any, home: Path) -> None:
    inspected = json.loads(one_shot(node, home, "-c", "inspect /gateway", before=("--json",)).stdout)
    assert inspected["path"] == "/gateway" and inspected["kind"] == "gateway"
    listed = json.loads(one_shot(node, home, "-c", "ls --json /services").stdout)
    assert "/services/redis" in [entry["path"] for entry in listed]
    failed = one_shot(node, home, "--json", "-c", "ls /no/such")
    assert failed.returncode == 4 and json.loads(failed.stdout)["error"]["exit"] == 4


def test_script_on_stdin(node: Any, home: Path) -> None:
    result = one_shot(node, home, input="cd /services\nls --json\n")
    assert result.returncode == 0
    assert "/services/redis" in [entry["path"] for entry in json.loads(result.stdout)]


def test_unreachable_node_exits_3(home: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = one_shot(None, home, "-c", "ls", before=("--port", str(port)))
    assert run.returncode == 3 and "cannot reach the node" in run.stderr
