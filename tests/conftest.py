"""Fixtures shared by every test layer.

`node`: one sandbox node for the session (real PID 1, namespaces, redis-server, actor tree),
reached like a user reaches it (TCP on the host's loopback, password). Tests that kill parts
of a node use `own_node`, a sandbox of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

# A shell starts a background job (`make test &`, nohup) with SIGINT and SIGQUIT ignored, and
# every process the tests start would inherit that: the Ctrl-C tests of the CLI and the examples
# would then wait in vain. Handled signals are reset to their defaults by exec, ignored ones are not.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@attrs.frozen
class Node:
    name: str
    host: str
    port: int
    password: str
    socket: str
    pid: int

    def client(self, **kwargs: Any) -> Any:
        from g8os.client import Client

        return Client(self.host, self.port, self.password, **kwargs)

    def redis(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=self.socket, password=self.password)


def start_sandbox(prefix: str) -> Node:
    from g8os.boot import sandbox

    name = f"{prefix}-{os.getpid() % 100000}-{uuid.uuid4().hex[:4]}"
    info = sandbox.up(name, detach=True, timeout=90)
    return Node(name=name, host=info["host"], port=int(info["port"]), password=info["password"],
                socket=info["socket"], pid=int(info["pid"]))


def stop_sandbox(node: Node) -> None:
    from g8os.boot import sandbox

    if sandbox.status(node.name)["state"] in ("absent", "stale"):
        return  # the test stopped it itself
    sandbox.down(node.name, timeout=60)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory both the test and the node's jobs see (the sandbox has its own /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="g8os-test-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    started = start_sandbox("t")
    try:
        yield started
    finally:
        stop_sandbox(started)


@pytest.fixture(scope="module")
def r(node: Node) -> Iterator[Any]:
    """A Redis connection to the session node, over its unix socket."""
    conn = node.redis()
    yield conn
    conn.close()


@pytest.fixture
def own_node() -> Iterator[Node]:
    started = start_sandbox("f")
    try:
        yield started
    finally:
        stop_sandbox(started)
