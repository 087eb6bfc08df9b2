"""The sandbox keeper (g8os.boot.sandbox) and `core0 sandbox`, on real namespaces and a real redis.

Most tests run the node with the fake plane of plane_fixture.py in its `redis` mode: it runs a
redis-server on the node's unix socket and answers `core.ping`, which is all the keeper needs.
The last test runs the real actor plane (g8os.boot.node) and is skipped while it cannot be imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from wire import alive, wait_for

from g8os.boot import sandbox

pytestmark = pytest.mark.timeout(60)

if os.geteuid() != 0:
    pytest.skip("needs root (namespaces and mounts)", allow_module_level=True)

PLANE = str(Path(__file__).with_name("plane_fixture.py"))
T = TypeVar("T")


def tree(pid: int) -> list[psutil.Process]:
    """A keeper and everything below it (the node's PID 1 and all its processes)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class Sandboxes:
    """Starts sandboxes under unique names and guarantees their removal."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.procs: dict[int, psutil.Process] = {}

    def name(self) -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        return name

    def up(self, name: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("plane", PLANE)
        kwargs.setdefault("timeout", 30)
        info = sandbox.up(name, **kwargs)
        self.watch(info["pid"])
        return info

    def watch(self, keeper_pid: int) -> list[psutil.Process]:
        procs = tree(keeper_pid)
        self.procs.update({p.pid: p for p in procs})
        return procs

    def cleanup(self) -> None:
        for name in self.names:
            with contextlib.suppress(RuntimeError):
                sandbox.down(name, timeout=30)
        for proc in self.procs.values():
            if alive(proc):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()  # a keeper's node follows it through PDEATHSIG
        wait_for(lambda: not [p for p in self.procs.values() if alive(p)], timeout=15,
                 what="every keeper and node process to be gone")
        for proc in self.procs.values():  # attached keepers are our children
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
        for name in self.names:
            directory = sandbox.sandbox_dir(name)
            if directory.exists():
                sandbox._remove_if_stale(directory)
            assert not directory.exists(), f"{directory} left behind"


@pytest.fixture
def sandboxes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandboxes]:
    monkeypatch.setenv("PLANE_MODE", "redis")  # inherited by keeper -> PID 1 -> plane
    boxes = Sandboxes()
    try:
        yield boxes
    finally:
        boxes.cleanup()


def core_ping(client: redis.Redis) -> dict[str, Any]:
    job = str(uuid.uuid4())
    client.rpush("core:default", json.dumps({"id": job, "command": "core.ping", "arguments": {}}))
    raw = client.brpoplpush(f"result:{job}", f"result:{job}", 10)
    assert raw is not None, "no result for core.ping"
    return json.loads(raw)


def tcp_client(info: dict[str, Any], password: str | None = None) -> redis.Redis:
    return redis.Redis(host=info["host"], port=info["port"], password=password, socket_timeout=15,
                       retry=Retry(NoBackoff(), 0))  # a refused password fails at once


# ---------------------------------------------------------------------------------------------


def test_up_status_down(sandboxes: Sandboxes) -> None:
    name = sandboxes.name()
    info = sandboxes.up(name)
    assert set(info) == {"name", "host", "port", "password", "socket", "pid"}
    assert info["name"] == name and info["host"] == "127.0.0.1"
    keeper = psutil.Process(info["pid"])
    assert keeper.ppid() == os.getpid()  # attached: our child, stops with us

    directory = sandbox.sandbox_dir(name)
    assert json.loads((directory / "sandbox.json").read_text()) == info
    config = json.loads((directory / "config.json").read_text())
    assert config["hostname"] == name and config["redis"]["password"] == info["password"]
    assert stat.S_IMODE((directory / "config.json").stat().st_mode) == 0o600
    assert info["socket"] == str(directory / "run" / "redis.sock")

    # Through the forwarder, redis enforces the password.
    with tcp_client(info, info["password"]) as client:
        assert client.ping()
        result = core_ping(client)
        assert result["state"] == "SUCCESS"
    for password in (None, "wrong"):
        with tcp_client(info, password) as client, pytest.raises(redis.RedisError):
            client.rpush("core:default", "{}")

    assert sandbox.status(name)["state"] == "running"
    assert sandbox.status(name)["port"] == info["port"]
    assert name in [row["name"] for row in sandbox.list_sandboxes()]
    with pytest.raises(RuntimeError, match="already running"):
        sandbox.up(name, plane=PLANE)

    procs = sandboxes.watch(info["pid"])
    assert len(procs) >= 4  # keeper, PID 1, the plane, redis-server, ...
    sandbox.down(name)
    assert not directory.exists()
    assert not [p for p in procs if alive(p)]
    assert sandbox.status(name) == {"name": name, "state": "absent"}
    with pytest.raises(RuntimeError, match="not running"):
        sandbox.down(name)


def test_forwarder_is_byte_for_byte_with_half_close(sandboxes: Sandboxes) -> None:
    info = sandboxes.up(sandboxes.name())
    password = info["password"].encode()
    with socket.create_connection((info["host"], info["port"]), timeout=10) as sock:
        request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # the replies must still come back
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == b"+OK\r\n+PONG\r\n"


def test_detached_keeper_outlives_its_caller(sandboxes: Sandboxes) -> None:
    name = sandboxes.name()
    info = sandboxes.up(name, detach=True)
    keeper = psutil.Process(info["pid"])
    assert keeper.ppid() != os.getpid()
    assert os.getsid(keeper.pid) != os.getsid(0)  # a session of its own, no terminal
    directory = sandbox.sandbox_dir(name)
    assert "node PID 1 is host pid" in (directory / "keeper.log").read_text()
    with tcp_client(info, info["password"]) as client:
        assert core_ping(client)["state"] == "SUCCESS"
    procs = sandboxes.watch(keeper.pid)
    sandbox.down(name)
    assert not directory.exists()
    assert not [p for p in procs if alive(p)]


def test_stale_directory_is_cleaned(sandboxes: Sandboxes) -> None:
    name = sandboxes.name()
    directory = sandbox.sandbox_dir(name)
    directory.mkdir(parents=True)
    (directory / "keeper.pid").write_text(json.dumps({"pid": 2**22 + 1, "create_time": 0}))
    (directory / "leftover").write_text("from a keeper that was killed")
    assert sandbox.status(name)["state"] == "stale"
    sandboxes.up(name)
    assert not (directory / "leftover").exists()
    sandbox.down(name)


def test_node_that_never_answers_fails_with_its_log(sandboxes: Sandboxes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANE_MODE", "crash")  # PID 1 restarts it with backoff, forever
    name = sandboxes.name()
    with pytest.raises(RuntimeError) as failure:
        sandbox.up(name, plane=PLANE, timeout=3)
    message = str(failure.value)
    assert "did not answer core.ping within 3s" in message
    assert "actor plane died" in message  # the tail of core0.log
    wait_for(lambda: not sandbox.sandbox_dir(name).exists(), what="the keeper to clean up")


def test_keeper_exits_nonzero_when_pid1_dies(sandboxes: Sandboxes) -> None:
    name = sandboxes.name()
    info = sandboxes.up(name)
    keeper = psutil.Process(info["pid"])
    pid1 = keeper.children()[0]
    procs = sandboxes.watch(keeper.pid)
    pid1.kill()
    assert keeper.wait(timeout=15) == 1
    assert not sandbox.sandbox_dir(name).exists()
    wait_for(lambda: not [p for p in procs if alive(p)], what="the node's processes to be gone")


def test_port_in_use_and_bad_names(sandboxes: Sandboxes) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        name = sandboxes.name()
        with pytest.raises(RuntimeError, match="cannot listen"):
            sandbox.up(name, port=taken.getsockname()[1], plane=PLANE)
    assert not sandbox.sandbox_dir(name).exists()
    for bad in ("", "Upper", "-dash", "a" * 33, "../etc", "a_b"):
        with pytest.raises(ValueError):
            sandbox.up(bad)
        with pytest.raises(ValueError):
            sandbox.status(bad)


def core0(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "g8os.boot.cli", *args],
                          capture_output=True, text=True, timeout=40)


def test_cli(sandboxes: Sandboxes) -> None:
    name = sandboxes.name()
    absent = core0("sandbox", "status", "--name", name)
    assert absent.returncode == 1 and "not running" in absent.stderr
    down = core0("sandbox", "down", "--name", name)
    assert down.returncode != 0 and "not running" in down.stderr
    bad = core0("sandbox", "up", "--detach", "--name", "Bad_Name")
    assert bad.returncode != 0 and "invalid sandbox name" in bad.stderr

    info = sandboxes.up(name)
    running = core0("sandbox", "status", "--name", name)
    assert running.returncode == 0 and json.loads(running.stdout)["port"] == info["port"]
    listed = core0("sandbox", "list", "--json")
    assert listed.returncode == 0
    assert name in [row["name"] for row in json.loads(listed.stdout)]
    assert name in core0("sandbox", "list").stdout
    stopped = core0("sandbox", "down", "--name", name)
    assert stopped.returncode == 0, stopped.stderr
    assert not sandbox.sandbox_dir(name).exists()


@pytest.mark.skipif(importlib.util.find_spec("g8os.boot.node") is None,
                    reason="the real actor plane g8os.boot.node does not exist yet")
def test_real_node_answers_through_the_forwarder(sandboxes: Sandboxes) -> None:
    name = sandboxes.name()
    info = sandboxes.up(name, plane=None, timeout=45)
    with tcp_client(info, info["password"]) as client:
        result = core_ping(client)
    assert result["state"] == "SUCCESS" and "PONG" in result["data"]
    procs = sandboxes.watch(info["pid"])
    sandbox.down(name)
    assert not [p for p in procs if alive(p)]
