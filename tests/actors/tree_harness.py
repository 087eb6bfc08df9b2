"""Small actors for the actor-layer tests, on a real Thespian multiprocTCPBase system.

Imported as the top-level module `tree_harness` (tests/actors is put on sys.path by the conftest), so
that Thespian, which names actor classes by "module.Class", finds them in every forked actor process.

Every actor here is a `Probe`: its children come from the config (`TreeConfig.tree`, keyed by the
parent's path, so a restarted actor gets the same children again) and it writes what happens to it
into a journal file, one JSON line per event, appended with O_APPEND so that the order of the lines
is the order of the events across processes:

    init          Init received (before anything else)
    up            on_start done: Ready follows
    stop          on_stop (children are already stopped)
    fork          the parent is about to create a child (with the pipes and sockets it holds then)
    child-failed  the parent got ChildFailed (with the error)
    exit-notice   the parent got ChildActorExited (`child`: the record it matched, or None)
    tick          an `after()` timer fired
    data          a watched fd delivered data

`Poke(path, action, ...)` travels down the tree by path and makes the target act; it answers
`Poked(corr, ...)` to `reply_to` (the test's ActorSystem).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, ClassVar

import attrs
from thespian.actors import ActorExitRequest

from g8os.actors.base import Actor, HeavySpec
from g8os.actors.supervision import Backoff, Strategy, SupFlags
from g8os.messages.internal import Stop


@attrs.frozen
class TreeConfig:
    """What `Init.config` carries: the base passes it through to every child unchanged."""

    journal: str
    tree: dict[str, list[HeavySpec]] = attrs.field(factory=dict)   # parent path → children
    start_sleep: dict[str, float] = attrs.field(factory=dict)       # path → seconds in on_start
    stop_sleep: dict[str, float] = attrs.field(factory=dict)        # path → seconds in on_stop


@attrs.frozen
class Poke:
    path: str
    action: str                      # info | raise | block | exit | timers | noop
    arg: Any = None
    corr: str = ""
    reply_to: Any = None


@attrs.frozen
class Poked:
    corr: str
    path: str
    pid: int
    value: Any = None


def fd_links(pid: int | str = "self") -> dict[int, str]:
    """fd → what it points at ("pipe:[123]", "socket:[456]", a path), for one process."""
    links = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            links[int(name)] = os.readlink(f"{base}/{name}")
        except OSError:
            continue
    return links


def journal(journal_file: str, **event: Any) -> None:
    line = json.dumps({"t": time.monotonic(), "pid": os.getpid(), **event}) + "\n"
    fd = os.open(journal_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Probe(Actor):
    kind: ClassVar[str] = "probe"

    def _note(self, ev: str, **data: Any) -> None:
        journal(self.config.journal, ev=ev, path=self.path, **data)

    def receiveMsg_Init(self, msg: Any, sender: Any) -> None:
        journal(msg.config.journal, ev="init", path=msg.path)
        super().receiveMsg_Init(msg, sender)

    def child_specs(self) -> list[HeavySpec]:
        return list(self.config.tree.get(self.path, []))

    def on_start(self) -> bool:
        self.prepare()
        pause = self.config.start_sleep.get(self.path, 0.0)
        if pause:
            time.sleep(pause)  # a slow start on purpose
        self._note("up", address=str(self.myAddress))
        return True

    def prepare(self) -> None:
        """Resources a subclass opens before its children are created."""

    def on_stop(self) -> None:
        pause = self.config.stop_sleep.get(self.path, 0.0)
        if pause:
            time.sleep(pause)  # a slow stop on purpose
        self._note("stop")

    def receiveMsg_ChildFailed(self, msg: Any, sender: Any) -> None:
        self._note("child-failed", child=msg.name, error=msg.error)
        super().receiveMsg_ChildFailed(msg, sender)

    def receiveMsg_ChildActorExited(self, msg: Any, sender: Any) -> None:
        record = next((r for r in self.children.values() if r.address == msg.childAddress), None)
        self._note("exit-notice", child=record.spec.name if record else None,
                   address=str(msg.childAddress))
        super().receiveMsg_ChildActorExited(msg, sender)

    def _start_child(self, record: Any) -> None:
        # What this process holds just before it forks the child: none of it may stay open there.
        links = fd_links()
        held = sorted({v for v in links.values() if v.startswith(("pipe:", "socket:"))})
        self._note("fork", child=record.spec.name, held=held)
        super()._start_child(record)

    # ---- pokes from the test --------------------------------------------------------------

    def receiveMsg_Poke(self, msg: Poke, sender: Any) -> None:
        reply_to = msg.reply_to or sender
        if msg.path != self.path:
            rest = msg.path[len(self.path.rstrip("/")):].strip("/")
            record = self.children.get(rest.split("/", 1)[0])
            if record is not None and record.address is not None:
                self.send(record.address, attrs.evolve(msg, reply_to=reply_to))
            return
        value: Any = None
        if msg.action == "raise":
            raise RuntimeError(f"boom {msg.arg}")
        if msg.action == "block":
            time.sleep(msg.arg)  # a hung handler on purpose
        elif msg.action == "exit":
            self.send(self.myAddress, ActorExitRequest())
        elif msg.action == "timers":
            for delay in msg.arg:
                self.after(delay, "tick", delay)
        elif msg.action == "info":
            value = {"address": str(self.myAddress), "watches": sorted(self._watches)}
        self.send(reply_to, Poked(msg.corr, self.path, os.getpid(), value))

    def tick(self, delay: float) -> None:
        self._note("tick", delay=delay)


class Root(Probe):
    kind = "testroot"
    flags = SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=None)


class OneForAll(Probe):
    kind = "one_for_all"
    flags = SupFlags(strategy=Strategy.ONE_FOR_ALL, intensity=20, period=60.0)


class RestForOne(Probe):
    kind = "rest_for_one"
    flags = SupFlags(strategy=Strategy.REST_FOR_ONE, intensity=20, period=60.0)


class Fragile(Probe):
    """Tolerates one restart in 60 s; the second failure escalates."""

    kind = "fragile"
    flags = SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=1, period=60.0)


class SlowBackoff(Probe):
    """The second quick failure of a child waits 1.5 s before its restart."""

    kind = "slow_backoff"
    flags = SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=20, period=60.0,
                     backoff=Backoff(initial=1.5, factor=2.0, cap=5.0, reset_after=60.0))


class Spared(Probe):
    """Keeps a warm spare process that becomes the next child to (re)start."""

    kind = "spared"
    keeps_spare = True


class DiesAfterFork(Probe):
    """Once armed (the file `die-after-fork` next to the journal), SIGKILLs itself right after it
    forks a child, before the child's Init can be delivered (Thespian holds messages to a new
    child until the child has connected)."""

    kind = "dies_after_fork"

    def _start_child(self, record: Any) -> None:
        super()._start_child(record)
        try:
            os.unlink(os.path.join(os.path.dirname(self.config.journal), "die-after-fork"))
        except FileNotFoundError:
            return
        self._note("dying", child=record.spec.name)
        os.kill(os.getpid(), signal.SIGKILL)


class FailsToStart(Probe):
    """on_start raises the first time (the file `fail-start` next to the journal is consumed)."""

    kind = "fails_to_start"

    def on_start(self) -> bool:
        try:
            os.unlink(os.path.join(os.path.dirname(self.config.journal), "fail-start"))
        except FileNotFoundError:
            return super().on_start()
        raise RuntimeError("cannot start")


class IgnoresStop(Probe):
    """Never answers Stop: its parent must SIGKILL it after the spec's grace period."""

    kind = "ignores_stop"

    def receiveMsg_Stop(self, msg: Stop, sender: Any) -> None:
        self._note("ignoring-stop")
        time.sleep(3600)  # hung on purpose


class PipeHolder(Probe):
    """Opens a pipe before its children are created and tells the journal which one."""

    kind = "pipe_holder"

    def prepare(self) -> None:
        self.pipe_r, self.pipe_w = os.pipe()
        self._note("pipe", link=os.readlink(f"/proc/self/fd/{self.pipe_r}"))


class Watcher(Probe):
    """Watches a FIFO (path from the journal's directory) and journals every chunk it reads."""

    kind = "watcher"

    def prepare(self) -> None:
        fifo = os.path.join(os.path.dirname(self.config.journal), "watch.fifo")
        self.fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self.watch(self.fifo_fd, self.on_readable)

    def on_readable(self) -> None:
        try:
            data = os.read(self.fifo_fd, 4096)
        except BlockingIOError:
            return
        self._note("data", data=data.decode())
