"""The test side of the actor-layer tests: a started actor system and correlated requests to it."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import tree_harness
from wire import wait_for

from g8os.messages.internal import ActorOp, CallReply, Init, Ready, TreeReply, TreeRequest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def session_members(sid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def find(node: dict[str, Any], path: str) -> dict[str, Any] | None:
    if node.get("path") == path:
        return node
    for child in node.get("children", []):
        found = find(child, path)
        if found is not None:
            return found
    return None


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children", []):
        yield from walk(child)


class Plane:
    """One actor system: start a test tree, talk to it with correlated messages, read the journal."""

    def __init__(self, asys: Any, port: int, admin_pid: int, sid: int, workdir: Path) -> None:
        self.asys = asys
        self.port = port
        self.admin_pid = admin_pid
        self.sid = sid
        self.workdir = workdir
        self.journal_path = workdir / "journal.jsonl"
        self.root: Any = None
        self.root_pid = 0
        self.stray: list[Any] = []   # messages that arrived while waiting for another one
        self.canary = ""             # "pipe:[inode]" of a pipe the test process held at the fork

    # ---- talking --------------------------------------------------------------------------

    def request(self, msg: Any, match: Callable[[Any], bool], timeout: float = 10.0,
                target: Any = None) -> Any:
        """Send `msg` and return the first message that `match`es; others go to `stray`."""
        deadline = time.monotonic() + timeout
        reply = self.asys.ask(target or self.root, msg, timeout)
        while reply is None or not match(reply):
            if reply is not None:
                self.stray.append(reply)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {msg!r} within {timeout}s (stray: {self.stray!r})")
            reply = self.asys.listen(left)
        return reply

    def listen_for(self, match: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """A message some actor sends on its own (a root's ChildFailed, Stopped...)."""
        for index, msg in enumerate(self.stray):
            if match(msg):
                return self.stray.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing matching within {timeout}s (stray: {self.stray!r})")
            msg = self.asys.listen(left)
            if msg is None:
                continue
            if match(msg):
                return msg
            self.stray.append(msg)

    def start(self, tree: dict[str, list[Any]], root_cls: type = tree_harness.Root,
              start_sleep: dict[str, float] | None = None, stop_sleep: dict[str, float] | None = None,
              timeout: float = 30.0) -> Ready:
        """Create the root and ask it `Init('', '/', 0, config)`, as boot/node.py does."""
        self.config = tree_harness.TreeConfig(str(self.journal_path), tree, start_sleep or {},
                                              stop_sleep or {})
        self.root = self.asys.createActor(root_cls)
        ready = self.request(Init("", "/", 0, self.config), lambda m: isinstance(m, Ready), timeout)
        self.root_pid = ready.pid
        return ready

    def poke(self, path: str, action: str, arg: Any = None, timeout: float = 10.0) -> tree_harness.Poked:
        corr = uuid.uuid4().hex
        return self.request(tree_harness.Poke(path, action, arg, corr),
                            lambda m: isinstance(m, tree_harness.Poked) and m.corr == corr, timeout)

    def tell(self, path: str, action: str, arg: Any = None) -> None:
        """A poke nobody waits an answer for (the target crashes or blocks)."""
        self.asys.tell(self.root, tree_harness.Poke(path, action, arg, uuid.uuid4().hex))

    def tree(self, timeout: float = 5.0) -> dict[str, Any]:
        corr = uuid.uuid4().hex
        reply = self.request(TreeRequest(corr), lambda m: isinstance(m, TreeReply) and m.corr == corr,
                             timeout)
        return reply.node

    def node(self, path: str) -> dict[str, Any] | None:
        return find(self.tree(), path)

    def pid(self, path: str) -> int:
        node = self.node(path)
        assert node is not None, f"{path} not in the tree"
        return node["pid"]

    def op(self, op: str, path: str, sig: int = 0, timeout: float = 10.0) -> CallReply:
        corr = uuid.uuid4().hex
        return self.request(ActorOp(op, path, sig, corr),
                            lambda m: isinstance(m, CallReply) and m.corr == corr, timeout)

    def running(self, path: str, other_than: int = 0) -> dict[str, Any] | None:
        """The node at `path` once it runs with a pid other than `other_than`."""
        node = self.node(path)
        if node and node["state"] == "running" and node["pid"] and node["pid"] != other_than:
            return node
        return None

    def wait_restarted(self, path: str, old_pid: int, timeout: float = 10.0) -> dict[str, Any]:
        return wait_for(lambda: self.running(path, old_pid), timeout, 0.05, f"{path} restarted")

    # ---- the journal ----------------------------------------------------------------------

    def journal(self, **match: Any) -> list[dict[str, Any]]:
        try:
            lines = self.journal_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if all(e.get(k) == v for k, v in match.items())]

    def mark(self) -> int:
        """The journal's length now: events after a mark are `since(mark)`."""
        return len(self.journal())

    def since(self, mark: int, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.journal()[mark:] if all(e.get(k) == v for k, v in match.items())]

    def pids(self) -> set[int]:
        """Every actor pid of the tree now, root included."""
        return {n["pid"] for n in walk(self.tree()) if n.get("pid")}


