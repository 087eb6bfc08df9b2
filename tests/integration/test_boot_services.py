"""Startup services and extensions of a boot configuration, on real sandbox nodes: dependency
order, readiness rules, failures released to dependants, conditions, protected restarts with
backoff, shutdown in reverse order, extension commands, config.get, and a broken configuration
that still boots.

Each node is started with `core0 sandbox up --config DIR` (sandbox.up(config_dir=...)). Services
write what they do into a directory under /var/tmp, which the node and the test both see.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from wire import call, host_pid, push, result, stream, wait_for

from g8os.boot import sandbox
from g8os.client import Client

pytestmark = pytest.mark.timeout(180)


class BootedNode:
    """A sandbox started with a boot configuration, and the directory its services write to."""

    def __init__(self, name: str, info: dict[str, Any], work: Path) -> None:
        self.name, self.info, self.work = name, info, work
        self.keeper = int(info["pid"])
        self.log_file = sandbox.sandbox_dir(name) / "core0.log"

    def client(self) -> Client:
        return Client.from_info(self.info)

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.info["socket"], password=self.info["password"])

    def config(self, section: str | None = None) -> Any:
        with self.client() as client:
            return client.config.get(section)

    def service(self, service_id: str) -> dict[str, Any]:
        return next(s for s in self.config("startup") if s["id"] == service_id)

    def lines(self, name: str) -> list[str]:
        path = self.work / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_lines(self, name: str, expected: list[str], timeout: float = 30) -> None:
        """Wait until the file `name` holds exactly `expected`; if it does not in time, fail with
        what it holds and the end of the node's log, which say why."""
        try:
            wait_for(lambda: self.lines(name) == expected, timeout=timeout, interval=0.1,
                     what=f"{name} == {expected}")
        except TimeoutError:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            tail = "\n".join(log.splitlines()[-80:])
            pytest.fail(f"{name} holds {self.lines(name)}, not {expected}; core0.log ends:\n{tail}")


@contextlib.contextmanager
def booted(prefix: str, files: dict[str, str], before: list[str] = ()) -> Iterator[BootedNode]:
    """A sandbox whose config dir holds `files` (`@DIR@` is the shared work directory, `@NAME@`
    the sandbox's name); `before`: files created in the work directory before the node starts.
    Stopped and removed in the end, whatever happens."""
    work = Path(tempfile.mkdtemp(prefix="g8os-boot-", dir="/var/tmp"))
    try:
        name = f"{prefix}-{os.getpid() % 100000}-{uuid.uuid4().hex[:4]}"
        config = work / "config"
        config.mkdir()
        for file, text in files.items():
            (config / file).write_text(text.replace("@DIR@", str(work)).replace("@NAME@", name))
        for file in before:
            (work / file).touch()
        info = sandbox.up(name, detach=True, timeout=90, config_dir=config)
        try:
            yield BootedNode(name, info, work)
        finally:
            if sandbox.status(name)["state"] not in ("absent", "stale"):
                sandbox.down(name, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stamps(lines: list[str]) -> dict[str, float]:
    """`<what> <who> <epoch>` lines → {"<what> <who>": epoch}."""
    found = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            found[f"{parts[0]} {parts[1]}"] = float(parts[2])
    return found


# ---- one node with a rich configuration, shared by the tests that do not stop it -------------

ORDER = """
[startup.first]
name = "sh"
args = ["-c", 'echo "start first $(date +%s.%N)" >> @DIR@/order; exec sleep 1000']
running_delay = 1

[startup.second]
name = "sh"
args = ["-c", '''echo "start second $(date +%s.%N)" >> @DIR@/order; echo booting; sleep 3
echo "matched second $(date +%s.%N)" >> @DIR@/order; echo "second is READY"; exec sleep 1000''']
after = ["first"]
running_match = "is READY"      # wins over the running_delay (2 s by default)

[startup.third]
name = "bash"
after = ["second"]
running_delay = -1              # running = exited successfully
[startup.third.args]
script = '''echo "start third $(date +%s.%N)" >> @DIR@/order; sleep 0.5
echo "end third $(date +%s.%N)" >> @DIR@/order'''

[startup.fourth]
name = "sh"
args = ["-c", 'echo "start fourth $(date +%s.%N)" >> @DIR@/order; exec sleep 1000']
after = ["third"]
running_delay = 0
"""

FAILING = """
[startup.broken]
name = "sh"
args = ["-c", "echo 'broken: no disk' >&2; exit 3"]

[startup.needs_broken]
name = "sh"
args = ["-c", "touch @DIR@/needs_broken_ran"]
after = ["broken"]

[startup.needs_needs]
name = "sh"
args = ["-c", "touch @DIR@/needs_needs_ran"]
after = ["needs_broken", "first"]
"""

CONDITIONS = """
[startup.cond_yes]
name = "sh"
args = ["-c", "touch @DIR@/cond_yes_ran"]
condition = "test -e @DIR@/present"
running_delay = -1

[startup.cond_no]
name = "sh"
args = ["-c", "touch @DIR@/cond_no_ran"]
condition = "test -e @DIR@/absent"

[startup.after_cond_no]
name = "true"
after = ["cond_no"]
"""

PROTECTED = """
[startup.guard]
name = "sleep"
args = ["1000"]
protected = true
running_delay = 0

[startup.flapper]
name = "sh"
args = ["-c", "date +%s.%N >> @DIR@/flaps; exit 1"]
protected = true
"""

EXTENSIONS = """
[extension.greet]
binary = "sh"
args = ["-c", 'echo "hello $1"; echo "$GREETING" >&2; cat', "greet", "{who}"]
env = {GREETING = "from {who}"}

[startup.greeter]
name = "greet"
args = {who = "boot", stdin = "piped in"}
running_delay = -1
"""

FOLLOWED = """
[startup.talker]
name = "sh"
args = ["-c", '''echo hello; echo "warn" >&2
while [ ! -e @DIR@/finish ]; do sleep 0.1; done; echo bye''']
running_delay = -1
"""

FILES = {"order.toml": ORDER, "failing.toml": FAILING, "conditions.toml": CONDITIONS,
         "protected.toml": PROTECTED, "extensions.toml": EXTENSIONS, "followed.toml": FOLLOWED}


@pytest.fixture(scope="module")
def boot() -> Iterator[BootedNode]:
    with booted("boot", FILES, before=["present"]) as node:
        yield node


def test_services_start_in_dependency_order(boot):
    wait_for(lambda: "start fourth" in stamps(boot.lines("order")), timeout=60, interval=0.1,
             what="the last service of the chain started")
    lines = [line.rsplit(" ", 1)[0] for line in boot.lines("order")]
    assert lines == ["start first", "start second", "matched second", "start third", "end third",
                     "start fourth"]
    at = stamps(boot.lines("order"))
    # second was started at least first's running_delay (1 s) after first: the processes' own
    # start times (clock ticks, 10 ms), not what they printed (which each printed when it could)
    created = {service: psutil.Process(host_pid(boot.keeper, boot.service(service)["pid"])).create_time()
               for service in ("first", "second")}
    assert created["second"] - created["first"] >= 1.0 - 0.011
    # fourth waited for third (running_delay -1) to exit successfully
    assert at["start fourth"] >= at["end third"]


def test_running_match_marks_a_service_running(boot):
    wait_for(lambda: "start third" in stamps(boot.lines("order")), timeout=60, interval=0.1,
             what="third started")
    at = stamps(boot.lines("order"))
    # second printed its match 3 s after its start: past the 2 s running_delay default, which
    # running_match replaces. third started only once the line was out.
    assert at["matched second"] - at["start second"] >= 3.0
    assert at["start third"] >= at["matched second"]
    second = boot.service("second")
    assert (second["state"], second["ready"], second["running_match"]) == ("running", True, "is READY")


def test_a_failing_dependency_releases_its_dependants_as_failed(boot):
    wait_for(lambda: boot.service("needs_needs")["state"] == "failed", timeout=30, interval=0.1,
             what="needs_needs released as failed")
    broken, needs, needs_needs = (boot.service(s) for s in ("broken", "needs_broken", "needs_needs"))
    assert (broken["state"], broken["reason"]) == ("failed", "exited with status 3")
    assert needs["state"] == "failed"
    assert needs["reason"] == "dependency `broken` failed: exited with status 3"
    assert needs_needs["reason"].startswith("dependency `needs_broken` failed: dependency `broken` failed")
    assert needs["runs"] == needs_needs["runs"] == 0
    assert not (boot.work / "needs_broken_ran").exists() and not (boot.work / "needs_needs_ran").exists()
    r = boot.redis()
    # results where a job's would be: the failed run's, and 412 for those that never ran
    ran = json.loads(r.lindex("result:broken", 0))
    assert (ran["state"], ran["code"], ran["streams"][1]) == ("ERROR", 1003, "broken: no disk")
    never = json.loads(r.lindex("result:needs_broken", 0))
    assert (never["state"], never["code"]) == ("ERROR", 412)
    assert "dependency `broken` failed" in json.loads(never["data"]) and "broken" in never["critical"]
    tree = json.loads(call(r, "actor.tree", {"path": "/services/needs_broken"})["data"])
    assert (tree["state"], tree["kind"]) == ("failed", "service")
    assert "dependency `broken` failed" in tree["last_error"]


def test_conditions(boot):
    wait_for(lambda: boot.service("after_cond_no")["state"] == "failed", timeout=30, interval=0.1,
             what="after_cond_no failed")
    wait_for(lambda: boot.service("cond_yes")["state"] == "done", timeout=30, interval=0.1,
             what="cond_yes done")
    assert (boot.work / "cond_yes_ran").exists()
    skipped = boot.service("cond_no")
    assert skipped["state"] == "skipped" and skipped["runs"] == 0
    assert skipped["reason"].startswith(f"condition `test -e {boot.work}/absent` is false")
    assert not (boot.work / "cond_no_ran").exists()
    assert boot.service("after_cond_no")["reason"].startswith("dependency `cond_no` skipped: condition")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # it ended while we looked
        return []


def _pid_changed(boot: BootedNode, service_id: str, old: int) -> int | None:
    pid = boot.service(service_id)["pid"]
    return pid if pid and pid != old else None


def test_a_protected_service_killed_is_restarted_with_backoff(boot):
    guard = wait_for(lambda: boot.service("guard")["pid"], timeout=30, what="guard running")
    delays = []
    for _ in range(2):
        victim = psutil.Process(host_pid(boot.keeper, guard))
        assert victim.name() == "sleep"  # never signal anything but our own service
        killed = time.monotonic()
        victim.kill()
        guard = wait_for(lambda old=guard: _pid_changed(boot, "guard", old), timeout=30, interval=0.02,
                         what="guard restarted")
        delays.append(time.monotonic() - killed)
    # the first quick failure restarts at once; the second waits 0.5 s (PROTECTED backoff)
    assert delays[1] >= 0.5 * 0.95, delays
    state = boot.service("guard")
    assert (state["state"], state["restarts"], state["runs"]) == ("running", 2, 3)

    # A service that dies at once, over and over: each restart waits longer (0, 0.5, 0.75, 1.125 s…)
    wait_for(lambda: len(boot.lines("flaps")) >= 5, timeout=60, interval=0.1, what="5 starts of flapper")
    starts = [float(x) for x in boot.lines("flaps")[:5]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, minimum in zip(gaps[1:], (0.5, 0.75, 1.125), strict=True):
        assert gap >= minimum * 0.95, gaps
    flapper = boot.service("flapper")
    assert flapper["ready"] is False and flapper["state"] in ("backoff", "starting")


def test_an_extension_command_runs_as_a_process_job(boot):
    r = boot.redis()
    res = call(r, "greet", {"who": "big world", "stdin": "from stdin"})
    assert (res["state"], res["code"], res["command"]) == ("SUCCESS", 0, "greet")
    assert res["streams"] == ["hello big world\nfrom stdin", "from big world"]
    missing = call(r, "greet", {})
    assert missing["code"] == 400 and "arguments.who" in json.loads(missing["data"])
    wrong = call(r, "greet", {"who": 7})
    assert wrong["code"] == 400 and "arguments.who" in json.loads(wrong["data"])
    assert call(r, "greet.more")["state"] == "UNKNOWN_CMD"
    # an extension as a startup service
    wait_for(lambda: boot.service("greeter")["state"] == "done", timeout=30, interval=0.1,
             what="greeter done")
    greeter = json.loads(r.lindex("result:greeter", 0))
    assert (greeter["state"], greeter["command"]) == ("SUCCESS", "greet")
    assert greeter["streams"] == ["hello boot\npiped in", "from boot"]


def test_config_get(boot):
    r = boot.redis()
    raw = call(r, "config.get")
    assert raw["state"] == "SUCCESS"
    assert boot.info["password"] not in raw["data"]  # never the redis password
    document = json.loads(raw["data"])
    assert set(document) == {"node", "startup", "extensions", "errors"}
    node = document["node"]
    assert node["name"] == boot.name and node["redis"]["auth"] is True
    assert "password" not in node["redis"]
    assert node["config_dir"] == str(sandbox.sandbox_dir(boot.name) / "config")
    assert node["config_files"] == sorted(FILES)
    order = [s["id"] for s in document["startup"]]
    assert order.index("first") < order.index("second") < order.index("third") < order.index("fourth")
    assert set(order) == {"first", "second", "third", "fourth", "broken", "needs_broken", "needs_needs",
                          "cond_yes", "cond_no", "after_cond_no", "guard", "flapper", "greeter", "talker"}
    guard = next(s for s in document["startup"] if s["id"] == "guard")
    assert guard["file"] == "protected.toml" and guard["protected"] is True and guard["args"] == ["1000"]
    assert [e["name"] for e in document["extensions"]] == ["greet"]
    assert document["extensions"][0]["arguments"] == ["who"]
    assert document["errors"] == []
    with boot.client() as client:
        assert client.config.get("extensions") == document["extensions"]
        assert client.config.get("errors") == []


@pytest.mark.parametrize("arguments", [{"section": "secrets"}, {"section": 3}, {"section": ["node"]}])
def test_config_get_bad_input_is_400(boot, arguments):
    res = call(boot.redis(), "config.get", arguments)
    assert (res["state"], res["code"]) == ("ERROR", 400)
    assert "arguments.section" in json.loads(res["data"])


def test_services_in_the_actor_tree(boot):
    tree = json.loads(call(boot.redis(), "actor.tree", {"path": "/services"})["data"])
    children = {c["name"]: c for c in tree["children"]}
    assert next(iter(children)) == "redis"
    assert {"first", "guard", "greeter"} <= set(children)
    first = children["first"]
    assert (first["path"], first["kind"], first["tier"], first["state"]) == \
        ("/services/first", "service", "light", "running")
    inspect = json.loads(call(boot.redis(), "actor.inspect", {"path": "/services/second"})["data"])
    assert any(m["text"] == "second is READY" for m in inspect["recent"])


def test_a_service_is_followed_like_a_job(boot):
    # core.subscribe reaches the JobSupervisor, which passes a service's id on to the
    # ServiceSupervisor: its recent output at once, then what it prints, until it ends.
    r = boot.redis()
    wait_for(lambda: boot.service("talker")["state"] == "starting", timeout=30, what="talker started")
    sub = push(r, "core.subscribe", {"id": "talker"}, stream=True)
    wait_for(lambda: len(stream(r, sub)) >= 2, timeout=20, what="the recent output replayed")
    base = [sys.executable, "-m", "g8os.client.cli", "--host", boot.info["host"], "--port",
            str(boot.info["port"]), "--password", boot.info["password"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("G8OS_")}
    cli = subprocess.Popen([*base, "logs", "-f", "talker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env)
    try:
        assert cli.stdout.readline() == "hello\n"  # the CLI follows it too: replayed, then waiting
        (boot.work / "finish").touch()
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert (cli.returncode, out, err) == (0, "bye\n", "warn\n")
    res = result(r, sub, timeout=30)
    assert res["state"] == "SUCCESS", res
    assert json.loads(res["data"]) == {"id": "talker", "state": "SUCCESS"}
    lines = [(e["message"]["message"], e["message"]["meta"] >> 16) for e in stream(r, sub)]
    # stdout and stderr are two pipes: which of the first two lines is read first is not fixed
    assert sorted(lines[:2]) == [("hello", 1), ("warn", 2)] and lines[2] == ("bye", 1), lines
    assert boot.service("talker")["state"] == "done"


def test_following_a_service_ends_with_job_kill_and_the_cli_shows_its_output(boot):
    r = boot.redis()
    sub = push(r, "core.subscribe", {"id": "second"}, stream=True)
    wait_for(lambda: any(e["message"]["message"] == "second is READY" for e in stream(r, sub)),
             timeout=20, what="the recent output replayed")
    assert call(r, "job.kill", {"id": sub})["state"] == "SUCCESS"
    assert json.loads(result(r, sub)["data"]) == {"id": "second", "state": "unsubscribed"}
    assert boot.service("second")["state"] == "running"  # following it did not touch it
    assert call(r, "job.kill", {"id": sub})["code"] == 404  # once only
    base = [sys.executable, "-m", "g8os.client.cli", "--host", boot.info["host"], "--port",
            str(boot.info["port"]), "--password", boot.info["password"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("G8OS_")}
    logs = subprocess.run([*base, "logs", "second"], capture_output=True, text=True, timeout=60, env=env)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == ["booting", "second is READY"]
    # a job.kill of a service itself is not the way to stop it
    assert call(r, "job.kill", {"id": "second"})["code"] == 404


def test_following_a_service_survives_a_job_supervisor_restart(boot):
    r = boot.redis()
    sub = push(r, "core.subscribe", {"id": "second"}, stream=True)
    wait_for(lambda: len(stream(r, sub)) == 2, timeout=20, what="the recent output replayed")
    before = json.loads(call(r, "actor.tree", {"path": "/jobs"})["data"])["pid"]
    call(r, "actor.kill", {"path": "/jobs", "signal": 9})

    def jobs_back() -> bool:
        tree = json.loads(call(r, "actor.tree", {"path": "/jobs"})["data"])
        return tree["pid"] != before and tree["state"] == "running"

    wait_for(jobs_back, timeout=60, interval=0.2, what="/jobs restarted")
    # The gateway passed the unanswered subscription to the new JobSupervisor, which passed it
    # to the ServiceSupervisor again: the same subscription, not a second one replaying the output.
    assert call(r, "job.kill", {"id": sub})["state"] == "SUCCESS"
    assert json.loads(result(r, sub)["data"]) == {"id": "second", "state": "unsubscribed"}
    assert [e["message"]["message"] for e in stream(r, sub)][:2] == ["booting", "second is READY"]
    assert len(stream(r, sub)) == 3  # the two lines and the end


def test_the_cli_shows_the_configuration(boot):
    base = [sys.executable, "-m", "g8os.client.cli", "--host", boot.info["host"], "--port",
            str(boot.info["port"]), "--password", boot.info["password"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("G8OS_")}
    plain = subprocess.run([*base, "config", "startup"], capture_output=True, text=True, timeout=60, env=env)
    assert plain.returncode == 0, plain.stderr
    row = next(line for line in plain.stdout.splitlines() if line.startswith("needs_broken"))
    assert "failed" in row and "broken" in row
    whole = subprocess.run([*base, "config", "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert whole.returncode == 0, whole.stderr
    document = json.loads(whole.stdout)
    assert [e["name"] for e in document["extensions"]] == ["greet"]
    assert boot.info["password"] not in whole.stdout
    bad = subprocess.run([*base, "config", "secrets"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2


# ---- nodes of their own ----------------------------------------------------------------------

SHUTDOWN = """
[startup.a]
name = "sh"
args = ["-c", '''
stop() {
    echo stop a >> @DIR@/order
    redis-cli -s /var/lib/g8os/sandbox/@NAME@/run/redis.sock ping >> @DIR@/order 2>&1
    exit 0
}
trap stop TERM
echo start a >> @DIR@/order; echo up; sleep 1000 & wait''']
running_match = "^up$"   # running once its line is written: b must not start (and write) before

[startup.b]
name = "sh"
args = ["-c", '''trap 'echo stop b >> @DIR@/order; exit 0' TERM
echo start b >> @DIR@/order; echo up; sleep 1000 & wait''']
after = ["a"]
running_match = "^up$"

[startup.c]
name = "core.system"
after = ["b"]
running_delay = 0
[startup.c.args]
name = "sh"
args = ["-c", '''trap 'echo stop c >> @DIR@/order; exit 0' TERM
echo start c >> @DIR@/order; sleep 1000 & wait''']
"""


def test_shutdown_stops_services_in_reverse_order():
    with booted("bootstop", {"chain.toml": SHUTDOWN}) as node:
        node.wait_lines("order", ["start a", "start b", "start c"])
        sandbox.down(node.name, timeout=60)
        lines = node.lines("order")
    assert lines[:6] == ["start a", "start b", "start c", "stop c", "stop b", "stop a"], lines
    # redis-server was still up when the first service started was stopped (it answered, if only
    # to ask for the password)
    answer = [line for line in lines[6:] if line.strip()]
    assert len(answer) == 1 and ("NOAUTH" in answer[0] or "PONG" in answer[0]), lines


def test_a_broken_configuration_still_boots_and_says_what_is_wrong():
    files = {
        "cycle.toml": """
[startup.a]
name = "true"
after = ["b"]
[startup.b]
name = "true"
after = ["a"]
[startup.d]
name = "true"
after = ["a"]
""",
        "bad.toml": """
[startup.e]
name = "true"
max_restart = "three"
""",
        "broken.toml": "[startup.x\n",
        "good.toml": """
[startup.c]
name = "sh"
args = ["-c", "touch @DIR@/c_ran"]
running_delay = -1
""",
    }
    with booted("bootbad", files) as node:
        r = node.redis()
        assert call(r, "core.ping")["state"] == "SUCCESS"
        wait_for(lambda: (node.work / "c_ran").exists(), timeout=30, what="the valid service ran")
        document = node.config()
        found = {(e["file"], e["key"]): e["message"] for e in document["errors"]}
        assert found[("cycle.toml", "startup.a.after")] == "dependency cycle: a → b → a"
        assert found[("cycle.toml", "startup.b.after")] == "dependency cycle: b → a → b"
        assert found[("bad.toml", "startup.e.max_restart")] == "expected integer, got string"
        assert found[("broken.toml", "")].startswith("not valid TOML")
        assert len(found) == 4
        services = {s["id"]: s for s in document["startup"]}
        assert set(services) == {"c", "d"}
        wait_for(lambda: node.service("d")["state"] == "failed", timeout=30, what="d failed")
        assert node.service("d")["reason"] == "dependency `a` is not valid (see config.get errors)"
        wait_for(lambda: node.service("c")["state"] == "done", timeout=30, what="c done")
        wait_for(lambda: "boot config: cycle.toml: startup.a.after: dependency cycle: a → b → a"
                 in node.log_file.read_text(errors="replace"), timeout=30, what="the error in the node log")
        # the node keeps serving commands
        assert call(r, "bash", {"script": "echo still here"})["streams"][0] == "still here"


CRASH = """
[startup.keep]
name = "sh"
args = ["-c", "echo run; exec sleep 1000"]
running_delay = 0

[startup.step]
name = "sh"
args = ["-c", "echo ran >> @DIR@/steps"]
after = ["keep"]
running_delay = -1
"""


def test_a_restarted_service_supervisor_starts_the_services_afresh():
    with booted("bootcrash", {"crash.toml": CRASH}) as node:
        wait_for(lambda: node.service("step")["state"] == "done", timeout=30, interval=0.1, what="step done")
        old = psutil.Process(host_pid(node.keeper, node.service("keep")["pid"]))
        assert old.cmdline() == ["sleep", "1000"]
        supervisor = json.loads(call(node.redis(), "actor.tree", {"path": "/services"})["data"])["pid"]
        r = node.redis()
        follower = push(r, "core.subscribe", {"id": "keep"}, stream=True)
        wait_for(lambda: [e["message"]["message"] for e in stream(r, follower)] == ["run"], timeout=20,
                 what="keep's output replayed to its follower")
        call(node.redis(), "actor.kill", {"path": "/services", "signal": 9})

        def back_again() -> dict[str, Any] | None:
            try:
                services = {s["id"]: s for s in node.config("startup")}
            except Exception:  # Redis restarts with the supervisor: retry until it answers
                return None
            keep, step = services["keep"], services["step"]
            fresh = keep["pid"] and keep["state"] == "running" and step["state"] == "done"
            return services if fresh and len(node.lines("steps")) == 2 else None

        wait_for(back_again, timeout=60, interval=0.2, what="the services started again")
        tree = json.loads(call(node.redis(), "actor.tree", {"path": "/services"})["data"])
        assert tree["pid"] != supervisor
        # the predecessor's processes did not survive it: one `sleep 1000`, the new one
        assert not old.is_running() or old.status() == psutil.STATUS_ZOMBIE
        sleeps = [p for p in psutil.Process(node.keeper).children(recursive=True)
                  if _cmdline(p) == ["sleep", "1000"]]
        assert len(sleeps) == 1
        assert node.lines("steps") == ["ran", "ran"]  # the one-shot step ran again, once
        # The follower of `keep` was passed on to the new ServiceSupervisor: it follows the new run.
        wait_for(lambda: r.exists(f"stream:{follower}") and
                 [e["message"]["message"] for e in stream(r, follower)] == ["run", "run"],
                 timeout=30, what="the new run's output reached the follower")
        assert not r.exists(f"result:{follower}")
        assert call(r, "job.kill", {"id": follower})["state"] == "SUCCESS"
        assert json.loads(result(r, follower)["data"]) == {"id": "keep", "state": "unsubscribed"}
