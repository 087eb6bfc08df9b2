"""PID 1 (g8os.boot.init) in real namespaces, with a fake actor plane (plane_fixture.py).

Each test starts PID 1 the way the sandbox keeper does (`g8os.boot.sandbox.start_pid1`, from a small
launcher process, since unshare(CLONE_NEWPID) changes where the caller's later children go), and
observes it from the host: /proc/<pid>/mountinfo and net/dev, the process tree through psutil, and
what the fake plane records in the node's run_dir (which lives under this test's tmp_path, below
/tmp: PID 1 must keep it reachable through its tmpfs on /tmp).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from wire import alive, wait_for

from g8os.boot.config import NodeConfig, RedisConfig

pytestmark = pytest.mark.timeout(60)

if os.geteuid() != 0:
    pytest.skip("needs root (namespaces and mounts)", allow_module_level=True)

PLANE = str(Path(__file__).with_name("plane_fixture.py"))
T = TypeVar("T")

# Forks PID 1 exactly as the keeper does, prints its host pid, exits with its exit code.
LAUNCHER = """
import os, sys
from g8os.boot.sandbox import start_pid1
pid = start_pid1(sys.argv[1], plane=sys.argv[2])
os.write(1, f"{pid}\\n".encode())
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


@dataclass
class Node:
    config: NodeConfig
    config_path: Path
    launcher: subprocess.Popen
    pid1: int
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # every process ever observed

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    def log(self) -> str:
        try:
            return Path(self.config.log_file).read_text()
        except FileNotFoundError:
            return ""

    def events(self, kind: str | None = None) -> list[list[str]]:
        try:
            lines = (self.run_dir / "plane.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        rows = [line.split() for line in lines]
        return [row for row in rows if kind is None or row[1] == kind]

    def processes(self) -> list[psutil.Process]:
        """Every process of the node but PID 1, seen from the host."""
        try:
            procs = psutil.Process(self.pid1).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update({p.pid: p for p in procs})
        return procs

    def wait_ready(self, generation: int = 1) -> None:
        wait_for(lambda: len(self.events("ready")) >= generation, what=f"plane generation {generation} ready")
        wait_for(lambda: self.log().count("actor plane ready") >= generation, what="PID 1 to see ready")

    def find(self, *cmdline: str) -> psutil.Process:
        def match() -> psutil.Process | None:
            for proc in self.processes():
                try:
                    if proc.cmdline()[: len(cmdline)] == list(cmdline):
                        return proc
                except psutil.NoSuchProcess:
                    continue
            return None

        return wait_for(match, what=f"process {cmdline}")

    def plane_process(self) -> psutil.Process:
        return self.find(sys.executable, PLANE)

    def finish(self, timeout: float) -> int:
        return self.launcher.wait(timeout=timeout)


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(mode: str = "normal", shutdown_timeout: float = 5.0) -> Node:
        hostname = f"g8t-{uuid.uuid4().hex[:8]}"
        config = NodeConfig(
            name=hostname, hostname=hostname, state_dir=str(tmp_path / "state"),
            run_dir=str(tmp_path / "run"), log_file=str(tmp_path / "core0.log"),
            redis=RedisConfig(socket=str(tmp_path / "run" / "redis.sock"), password="secret"),
            shutdown_timeout=shutdown_timeout,
        )
        config_path = tmp_path / "config.json"
        config.save(config_path)
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(config_path), PLANE],
                                    stdout=subprocess.PIPE, env={**os.environ, "PLANE_MODE": mode})
        assert launcher.stdout is not None
        pid1 = int(launcher.stdout.readline())
        node = Node(config, config_path, launcher, pid1)
        nodes.append(node)
        return node

    yield start

    for node in nodes:
        procs = node.processes()
        if node.launcher.poll() is None:
            node.launcher.kill()  # PID 1 has PDEATHSIG=SIGKILL; its namespace dies with it
        node.launcher.wait(10)
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(node.pid1))
        everything = [*node.seen.values(), *procs]
        wait_for(lambda everything=everything: not [p for p in everything if alive(p)], timeout=10,
                 what="every process of the node to be gone")


def mountinfo(pid: int | str) -> list[dict[str, str]]:
    rows = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fields, tail = left.split(), right.split()
        rows.append({"id": fields[0], "point": fields[4], "optional": " ".join(fields[6:]),
                     "fstype": tail[0], "super": tail[2] if len(tail) > 2 else ""})
    return rows


def top_mount(rows: list[dict[str, str]], point: str) -> dict[str, str]:
    return [row for row in rows if row["point"] == point][-1]


# ---------------------------------------------------------------------------------------------


def test_node_setup(start_node: Callable[..., Node]) -> None:
    host_name = socket.gethostname()
    node = start_node()
    node.wait_ready()
    probe = json.loads(wait_for(
        lambda: next(node.run_dir.glob("probe-*.json"), None), what="probe").read_text())

    # Mounts: fresh kernel filesystems, all private, none visible on the host.
    rows = mountinfo(node.pid1)
    expected = {"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts",
                "/dev/shm": "tmpfs", "/run": "tmpfs", "/tmp": "tmpfs"}
    ours = {point: top_mount(rows, point) for point in expected}
    assert {point: row["fstype"] for point, row in ours.items()} == expected
    assert "ptmxmode=666" in ours["/dev/pts"]["super"]
    assert not [row for row in rows if "shared:" in row["optional"]], "a mount still propagates"
    host_ids = {row["id"] for row in mountinfo("self")}
    assert not host_ids & {row["id"] for row in ours.values()}, "a node mount appeared on the host"
    # The node's dirs under /tmp are bound back onto its tmpfs (the probe file itself proves it).
    assert top_mount(rows, str(Path(node.config.log_file).parent))["fstype"] != "tmpfs"
    assert probe["state_dir_is_dir"]

    # The plane sees its own pid namespace, hostname, only lo (up), the raised limit, the env.
    assert probe["ppid"] == 1
    assert probe["hostname"] == node.config.hostname
    assert socket.gethostname() == host_name
    assert probe["interfaces"] == ["lo"]
    assert probe["lo_flags"] & 0x1
    interfaces = [line.split(":")[0].strip()
                  for line in Path(f"/proc/{node.pid1}/net/dev").read_text().splitlines()[2:]]
    assert interfaces == ["lo"]
    soft, hard = probe["nofile"]
    assert soft >= 65536 or soft == hard
    assert probe["thesplog_file"] == str(node.run_dir / "thespian.log")
    assert probe["thesplog_threshold"] == "WARNING"
    assert probe["stdin"] == "/dev/null"


def test_no_zombie_survives(start_node: Callable[..., Node]) -> None:
    node = start_node()
    node.wait_ready()
    wait_for(lambda: node.events("orphans"), what="the plane to spawn orphans")
    plane = node.plane_process()
    admin = node.find("sleep", "1000")

    def settled() -> bool:
        procs = node.processes()
        return {p.pid for p in procs} == {plane.pid, admin.pid} and all(alive(p) for p in procs)

    wait_for(settled, what="every orphan reaped (only the plane and the admin left, no zombie)")
    assert psutil.Process(admin.pid).ppid() == node.pid1  # adopted by PID 1, like Thespian's admin


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ordered_shutdown(start_node: Callable[..., Node], sig: signal.Signals) -> None:
    node = start_node(shutdown_timeout=5.0)
    node.wait_ready()
    procs = node.processes()
    assert procs
    started = time.monotonic()
    os.kill(node.pid1, sig)
    assert node.finish(timeout=node.config.shutdown_timeout + 1) == 0
    assert time.monotonic() - started < node.config.shutdown_timeout + 1
    assert node.events("term"), "the plane got SIGTERM"
    assert not [p for p in procs if alive(p)]
    assert "node stopped" in node.log()


def test_shutdown_deadline_kills_a_stubborn_plane(start_node: Callable[..., Node]) -> None:
    node = start_node(mode="stubborn", shutdown_timeout=2.0)
    node.wait_ready()
    procs = node.processes()
    started = time.monotonic()
    os.kill(node.pid1, signal.SIGTERM)
    assert node.finish(timeout=node.config.shutdown_timeout + 1) == 0
    elapsed = time.monotonic() - started
    assert node.config.shutdown_timeout - 0.1 <= elapsed < node.config.shutdown_timeout + 1
    assert node.events("term-ignored")
    assert not [p for p in procs if alive(p)]
    assert "did not stop in time" in node.log()


def test_plane_death_restarts_the_plane_with_backoff(start_node: Callable[..., Node]) -> None:
    node = start_node()
    node.wait_ready()
    first = node.processes()
    admin = node.find("sleep", "1000")

    killed_at = time.time()
    admin.kill()  # the Thespian admin dies: the whole tree goes, the plane starts again
    node.wait_ready(generation=2)
    starts = node.events("start")
    assert len(starts) == 2
    assert float(starts[1][0]) - killed_at >= 1.0  # first backoff
    assert not [p for p in first if alive(p)], "the old generation was killed"
    assert "admin pid" in node.log() and "restarting the actor plane in 1s" in node.log()

    plane = node.plane_process()
    second = node.processes()
    killed_at = time.time()
    plane.kill()  # the plane process dies: same treatment, longer backoff
    node.wait_ready(generation=3)
    assert float(node.events("start")[2][0]) - killed_at >= 2.0
    assert not [p for p in second if alive(p)]
    assert "restarting the actor plane in 2s" in node.log()

    os.kill(node.pid1, signal.SIGTERM)
    assert node.finish(timeout=node.config.shutdown_timeout + 1) == 0


def test_sigusr1_reaches_the_plane_and_reopens_the_log(start_node: Callable[..., Node]) -> None:
    node = start_node()
    node.wait_ready()
    log = Path(node.config.log_file)
    log.rename(log.with_suffix(".log.1"))
    os.kill(node.pid1, signal.SIGUSR1)
    wait_for(lambda: node.events("usr1"), what="the plane to get SIGUSR1")
    wait_for(lambda: "log reopened" in node.log(), what="a new log file")
    os.kill(node.pid1, signal.SIGHUP)  # ignored: the node keeps running
    os.kill(node.pid1, signal.SIGTERM)
    assert node.finish(timeout=node.config.shutdown_timeout + 1) == 0
    assert len(node.events("start")) == 1


def test_bad_config_exits_2(start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    node.wait_ready()
    os.kill(node.pid1, signal.SIGTERM)
    assert node.finish(timeout=10) == 0
    node.config_path.write_text("{not json")
    launcher = subprocess.run([sys.executable, "-c", LAUNCHER, str(node.config_path), PLANE],
                              capture_output=True, text=True, timeout=30)
    assert launcher.returncode == 2
    assert "cannot read" in launcher.stderr


def test_refuses_to_run_unless_pid1(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    # Isolated anyway, so that even a broken guard could not touch the host's mounts.
    result = subprocess.run(["unshare", "--mount", "--uts", "--ipc", "--net", sys.executable, "-m",
                             "g8os.boot.init", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "must run as PID 1" in result.stderr
